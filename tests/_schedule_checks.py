"""Checks shared by the schedule tests (tracing, gradients, step types, goldens)."""

from __future__ import annotations

import contextlib
import json
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

GOLDENS = json.loads((pathlib.Path(__file__).parent / "data" / "schedule_goldens.json").read_text())

# CyclicLR scale functions used in the goldens, by name (same expression as in torch).
SCALE_FNS = {"inverse_linear": lambda x: 1.0 / (1.0 + 0.1 * x)}


def assert_golden(values, expected, x64: bool) -> None:
    """float64: 1e-9 pointwise; float32: 1e-5 relative to the largest value."""
    values = np.asarray(values, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert values.dtype == expected.dtype and values.shape == expected.shape
    tol = 1e-9 if x64 else 1e-5 * np.max(np.abs(expected))
    np.testing.assert_allclose(values, expected, rtol=0, atol=tol)


def assert_matches_torch(build: Callable, case: dict, x64: bool) -> None:
    """Checks the LR and momentum schedules ``build(case["kwargs"])`` against a golden case."""
    lr, momentum = build(case["kwargs"])
    steps = np.asarray(case["steps"])
    assert lr(steps).dtype == (jnp.float64 if x64 else jnp.float32)
    assert_golden(lr(steps), case["lr"], x64=x64)
    assert_golden(momentum(steps), case["momentum"], x64=x64)


def assert_traceable(
    make: Callable[[object], Callable], values: list[list[float]], steps: np.ndarray
) -> None:
    """``make(v)(steps)`` under ``jit(vmap)`` over ``v`` matches the concrete
    construction, and a second batch of values reuses the compiled function."""
    traces = 0

    @jax.jit
    def batched(v):
        nonlocal traces
        traces += 1
        return jax.vmap(lambda x: make(x)(steps))(v)

    for batch in values:
        got = np.asarray(batched(jnp.asarray(batch, dtype=jnp.result_type(float))))
        want = np.stack([np.asarray(make(v)(steps)) for v in batch])
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    assert traces == 1


def assert_finite_grad(make: Callable[[object], Callable], value: float, steps) -> None:
    """The gradient of the schedule w.r.t. the argument is finite at every step."""
    for step in steps:
        grad = jax.grad(lambda v, step=step: make(v)(step))(float(value))
        assert np.isfinite(grad), (value, step, grad)


def assert_step_types(schedule: Callable) -> None:
    """Python/NumPy/JAX integer steps agree; arrays map elementwise; huge steps are finite."""
    ref = float(schedule(7))
    for step in (7, np.int64(7), np.int32(7), jnp.int32(7), 7.0, np.float32(7.0)):
        np.testing.assert_allclose(float(schedule(step)), ref, rtol=1e-6)
    steps = np.arange(12, dtype=np.int32)
    batch = np.asarray(schedule(jnp.asarray(steps)))
    assert batch.shape == (12,)
    np.testing.assert_allclose(batch, [float(schedule(int(s))) for s in steps], rtol=1e-6)
    assert np.asarray(schedule(steps.reshape(3, 4))).shape == (3, 4)
    for huge in (2**31 - 1, 2**40, np.int64(2**40), -5):
        assert np.isfinite(float(schedule(huge))), huge


@contextlib.contextmanager
def float64():
    """``jax_enable_x64`` on inside the block, restored after (for Hypothesis tests too,
    which cannot take function-scoped fixtures)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
