"""Shared test fixtures (JAX is pinned to CPU by the repository's conftest.py)."""

import jax
import pytest


@pytest.fixture
def x64():
    """Runs a test with ``jax_enable_x64`` on, restoring the setting after."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture(autouse=True)
def two_host_threads(monkeypatch):
    """Serial lane groups step on two host threads, whatever the machine's cores.

    Keeps the strategy labels (``"serial+threads[2]/scan"``) and the threaded
    path the same on every machine the suite runs on.
    """
    from clrjax._engine import strategy

    monkeypatch.setattr(strategy, "host_threads", lambda: 2)
