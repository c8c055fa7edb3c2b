"""``python -m clrjax``: the command line (see :mod:`clrjax._cli`)."""

from clrjax._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
