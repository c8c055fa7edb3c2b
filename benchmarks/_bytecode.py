"""Bytecode for the repository's modules, as an installed package has it.

``pip install`` compiles a package's modules to bytecode; an editable install
(``pip install -e``) leaves that to the first import, which writes
``__pycache__`` unless ``PYTHONDONTWRITEBYTECODE`` is set (as on some CI hosts
and containers). Without bytecode every fresh process compiles clrjax's
modules from source again (~0.1 s on 2 cores), time a cold row would count
and a user of an installed clrjax does not wait for; jax, optax and torch,
installed by pip, have theirs.
"""

from __future__ import annotations

import compileall
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compile_sources() -> None:
    """Writes the bytecode of ``clrjax/`` and ``benchmarks/`` (``__pycache__``, git-ignored)."""
    for folder in ("clrjax", "benchmarks"):
        if not compileall.compile_dir(ROOT / folder, quiet=1):
            raise RuntimeError(f"could not byte-compile {ROOT / folder}")
