"""Tests for clrjax._warm_restarts (SGDR)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _schedule_checks import (
    GOLDENS,
    assert_finite_grad,
    assert_golden,
    assert_step_types,
    assert_traceable,
)

import clrjax

CASES = GOLDENS["warm_restarts"]


def _stepwise_reference(num_steps, base_lr, t_0, t_mult, eta_min=0.0):
    """PyTorch's per-step recurrence (T_cur += 1; restart when T_cur >= T_i), in NumPy."""
    t_cur, t_i, out = 0.0, float(t_0), []
    for _ in range(num_steps):
        out.append(eta_min + (base_lr - eta_min) * (1 + np.cos(np.pi * t_cur / t_i)) / 2)
        t_cur += 1
        if t_cur >= t_i:
            t_cur -= t_i
            t_i *= t_mult
    return np.array(out)


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["kwargs"]))
def test_matches_torch_float32(case):
    sched = clrjax.cosine_warm_restarts_schedule(**case["kwargs"])
    steps = np.asarray(case["steps"])
    assert sched(steps).dtype == jnp.float32
    assert_golden(sched(steps), case["lr"], x64=False)


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["kwargs"]))
def test_matches_torch_float64(case, x64):
    sched = clrjax.cosine_warm_restarts_schedule(**case["kwargs"])
    steps = np.asarray(case["steps"])
    assert sched(steps).dtype == jnp.float64
    assert_golden(sched(steps), case["lr"], x64=True)


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["kwargs"]))
def test_matches_torch_float32_under_jit(case):
    # Under jit XLA folds the constant t_0 and t_mult into the arithmetic; with
    # t_mult=4 the restart at step 50 used to come out as eta_min.
    sched = jax.jit(clrjax.cosine_warm_restarts_schedule(**case["kwargs"]))
    assert_golden(sched(np.asarray(case["steps"])), case["lr"], x64=False)


def test_goldens_cover_t_mult():
    assert {c["kwargs"]["t_mult"] for c in CASES} >= {1, 2, 3, 4}


def _restarts(t_0, t_mult, below=2**24):
    """Cycle starts after 0 and below ``below``, as Python ints."""
    starts, start, length = [], t_0, t_0 * t_mult
    while start < below:
        starts.append(start)
        start, length = start + length, length * t_mult
    return np.array(starts)


@pytest.mark.parametrize("t_mult", [4, 6, 7, 10])
@pytest.mark.parametrize("t_0", [7, 10])
def test_every_restart_below_2_24_lands_under_jit(t_0, t_mult):
    starts = _restarts(t_0, t_mult)
    sched = clrjax.cosine_warm_restarts_schedule(0.05, t_0, t_mult, eta_min=1e-10)
    # The step before a restart is the last one of the previous cycle.
    previous = t_0 * float(t_mult) ** np.arange(len(starts))
    before = 1e-10 + (0.05 - 1e-10) * (1 + np.cos(np.pi * (previous - 1) / previous)) / 2
    for schedule in (sched, jax.jit(sched)):
        np.testing.assert_allclose(schedule(starts), 0.05, rtol=1e-7)
        np.testing.assert_allclose(schedule(starts - 1), before, rtol=0, atol=1e-5 * 0.05)


def test_every_restart_below_2_24_lands_with_traced_arguments():
    @jax.jit
    def at(t_0, t_mult, steps):
        return clrjax.cosine_warm_restarts_schedule(1.0, t_0, t_mult)(steps)

    for t_mult in range(2, 11):
        for t_0 in range(1, 21):
            starts = _restarts(t_0, t_mult)
            padded = np.zeros(40, dtype=np.int32)  # one shape: one compilation
            padded[: len(starts)] = starts
            np.testing.assert_array_equal(at(float(t_0), float(t_mult), padded), 1.0)


@pytest.mark.parametrize(("t_0", "t_mult", "step"), [(10, 1.1, 10), (7, 4, 7), (10, 4, 50)])
def test_restart_examples_from_the_issue(t_0, t_mult, step):
    sched = clrjax.cosine_warm_restarts_schedule(1.0, t_0, t_mult)
    assert float(sched(step)) == 1.0
    assert float(jax.jit(sched)(step)) == 1.0  # was 0.0 (eta_min)


@pytest.mark.parametrize("step", [2**31 + 3, 2**40 + 3, 2**47 + 1, 3 * 2**24 + 2])
def test_huge_integer_steps_are_exact_with_t_mult_1(step):
    # float32 cannot represent these steps; the offset into the cycle is still exact.
    want = (1 + np.cos(np.pi * (step % 7) / 7)) / 2
    sched = clrjax.cosine_warm_restarts_schedule(1.0, 7)
    for given in (step, np.int64(step), np.array([step]), np.float64(step)):
        np.testing.assert_allclose(sched(given), want, rtol=1e-6)


def test_traced_int32_steps_are_exact_under_jit():
    steps = np.array([2**31 - 1, 2**31 - 2, 2**24 + 1, 2**30 + 3])
    want = 0.1 + 0.9 * (1 + np.cos(np.pi * (steps % 7) / 7)) / 2
    got = jax.jit(clrjax.cosine_warm_restarts_schedule(1.0, 7, eta_min=0.1))(
        jnp.asarray(steps, dtype=jnp.int32)
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("t_mult", [1.0, 2.0])
@pytest.mark.parametrize("name", ["t_0", "t_mult"])
def test_traced_degenerate_values_are_finite(name, t_mult):
    # Refused when concrete; traced, they cannot be inspected: t_0 = 0 gives base_lr
    # (every step a restart), t_mult < 1 counts as 1.
    value = {"t_0": 0.0, "t_mult": 0.5}[name]

    steps = np.array([0, 1, 5, 2**40])

    def lr(v):
        args = dict(base_lr=0.1, t_0=3.0, t_mult=t_mult, eta_min=0.01) | {name: v}
        return clrjax.cosine_warm_restarts_schedule(**args)(steps)

    got, grads = jax.jit(lambda v: (lr(v), jax.jacobian(lr)(v)))(value)
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(grads)), (got, grads)
    want = 0.1 if name == "t_0" else lr(1.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
    ("t_0", "t_mult"), [(1, 2), (3, 2), (1, 3), (7, 3), (2, 5), (4, 1), (1, 1.5), (2.5, 2)]
)
def test_restarts_land_exactly_on_cycle_boundaries(t_0, t_mult):
    # Every step up to 20000, including every restart, against the recurrence.
    n = 20_000
    want = _stepwise_reference(n, 1.0, t_0, t_mult)
    got = np.asarray(clrjax.cosine_warm_restarts_schedule(1.0, t_0, t_mult)(np.arange(n)))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    restarts = np.flatnonzero(want == 1.0)
    np.testing.assert_array_equal(got[restarts], 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(t_0=0), "t_0 must be > 0, got 0"),
        (dict(t_0=-2.0), "t_0"),
        (dict(t_mult=0.5), "t_mult must be >= 1, got 0.5"),
        (dict(t_mult=float("nan")), "t_mult must be finite"),
        (dict(eta_min=float("inf")), "eta_min must be finite"),
        (dict(base_lr=float("nan")), "base_lr must be finite"),
        (dict(base_lr=1e39), "base_lr must be at most 3.403e"),
        (dict(t_0=1e-40), "t_0 must be >= 1.175e-38"),
        (dict(t_mult=1e39), "t_mult must be at most"),
        (dict(eta_min=-1e39), "eta_min must be at most"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        clrjax.cosine_warm_restarts_schedule(**(dict(base_lr=0.1, t_0=10) | kwargs))


ARGS = {
    "base_lr": [[0.1, 1.0, 0.5], [2.0, 0.01, 0.3]],
    "t_0": [[1.0, 3.0, 10.0], [2.0, 7.0, 2.5]],
    "t_mult": [[1.0, 2.0, 3.0], [1.5, 1.0, 4.0]],
    "eta_min": [[0.0, 0.01, 0.05], [0.001, 0.0, 0.02]],
}
STEPS = np.array([0, 1, 2, 3, 4, 5, 9, 10, 21, 30, 70, 100, 1000])


@pytest.mark.parametrize("name", list(ARGS))
def test_every_argument_traces(name):
    base = dict(base_lr=0.1, t_0=3.0, t_mult=2.0, eta_min=0.001)
    assert_traceable(
        lambda v: clrjax.cosine_warm_restarts_schedule(**(base | {name: v})), ARGS[name], STEPS
    )


@pytest.mark.parametrize("name", list(ARGS))
@pytest.mark.parametrize("t_mult", [1.0, 2.0, 3.0])
def test_gradients_are_finite(name, t_mult):
    base = dict(base_lr=0.1, t_0=3.0, t_mult=t_mult, eta_min=0.001)
    make = lambda v: clrjax.cosine_warm_restarts_schedule(**(base | {name: v}))
    # Restarts (3, 9, 12, 21, 39) and mid-cycle steps, a far step and a huge one.
    assert_finite_grad(make, base[name], [0, 1, 3, 9, 12, 21, 39, 40, 10_000, 2**40])


@pytest.mark.parametrize("t_mult", [1, 2, 3])
def test_step_types(t_mult):
    assert_step_types(clrjax.cosine_warm_restarts_schedule(0.1, 5, t_mult, eta_min=0.01))


def test_values_stay_within_bounds_for_huge_steps():
    steps = np.array([2**31 - 1, 2**40, 2**52, 2**62], dtype=np.int64)
    for t_mult in (1, 2, 3):
        values = np.asarray(clrjax.cosine_warm_restarts_schedule(1.0, 3, t_mult, 0.1)(steps))
        assert np.all((values >= 0.1 - 1e-6) & (values <= 1.0 + 1e-6)), (t_mult, values)
