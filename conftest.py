"""Repository-wide pytest set-up: JAX runs on CPU for tests and doctests."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

collect_ignore_glob = ["benchmarks/*", "scripts/*", "examples/*", ".venv/*"]
