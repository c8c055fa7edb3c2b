"""Shared test fixtures (JAX is pinned to CPU by the repository's conftest.py)."""

import pytest
from _schedule_checks import float64


@pytest.fixture
def x64():
    """Runs a test with ``jax_enable_x64`` on, restoring the setting after."""
    with float64():
        yield


@pytest.fixture(autouse=True)
def two_host_threads(monkeypatch):
    """Serial lane groups step on two host threads, whatever the machine's cores.

    Keeps the strategy labels (``"serial+threads[2]/scan"``) and the threaded
    path the same on every machine the suite runs on.
    """
    from clrjax._engine import strategy

    monkeypatch.setattr(strategy, "host_threads", lambda: 2)
