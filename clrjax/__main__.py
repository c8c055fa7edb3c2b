"""``python -m clrjax``: the command line (see :mod:`clrjax.demo._cli`)."""

from clrjax.demo._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
