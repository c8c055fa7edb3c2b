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
