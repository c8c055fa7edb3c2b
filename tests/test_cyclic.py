"""Tests for clrjax._cyclic (cyclical learning rates and momentum)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _schedule_checks import (
    GOLDENS,
    SCALE_FNS,
    assert_finite_grad,
    assert_matches_torch,
    assert_step_types,
    assert_traceable,
)

import clrjax

CASES = GOLDENS["cyclic"]
STEPS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 13, 20, 100])


def _build(kwargs):
    """(lr schedule, momentum schedule) for a golden entry's kwargs."""
    kw = dict(kwargs)
    if "scale_fn" in kw:
        kw["scale_fn"] = SCALE_FNS[kw["scale_fn"]]
    lr = clrjax.cyclic_schedule(**kw)
    del kw["base_lr"], kw["max_lr"]
    return lr, clrjax.cyclic_momentum_schedule(0.8, 0.9, **kw)


def _reference(t, base, peak, up, down, scale):
    """Smith's triangle in NumPy, written independently of the implementation."""
    total = up + down
    pos = np.mod(t, total)
    tri = np.where(pos <= up, pos / up, (total - pos) / down)
    return base + (peak - base) * tri * scale


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["kwargs"]))
def test_matches_torch_float32(case):
    assert_matches_torch(_build, case, x64=False)


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["kwargs"]))
def test_matches_torch_float64(case, x64):
    assert_matches_torch(_build, case, x64=True)


def test_goldens_cover_every_mode():
    kwargs = [c["kwargs"] for c in CASES]
    assert {k.get("mode", "triangular") for k in kwargs} == {
        "triangular",
        "triangular2",
        "exp_range",
    }
    assert {k.get("scale_mode") for k in kwargs if "scale_fn" in k} == {None, "iterations"}
    assert any(k.get("step_size_down") not in (None, k["step_size_up"]) for k in kwargs)
    assert any(k["step_size_up"] == 1 for k in kwargs)


@pytest.mark.parametrize(
    ("mode", "scale"),
    [
        ("triangular", lambda t, c: np.ones_like(t)),
        ("triangular2", lambda t, c: 0.5 ** (c - 1)),
        ("exp_range", lambda t, c: 0.95**t),
    ],
)
def test_modes_match_numpy_reference(mode, scale):
    t = np.arange(60.0)
    cycle = np.floor(t / 10) + 1
    sched = clrjax.cyclic_schedule(0.1, 0.7, 3, 7, mode=mode, gamma=0.95)
    want = _reference(t, 0.1, 0.7, 3, 7, scale(t, cycle))
    np.testing.assert_allclose(sched(t), want, rtol=1e-6, atol=1e-7)


def test_shorthands_equal_cyclic_schedule():
    t = np.arange(50)
    pairs = [
        (clrjax.triangular_schedule(0.1, 1.0, 4, 6), dict(mode="triangular")),
        (clrjax.triangular2_schedule(0.1, 1.0, 4, 6), dict(mode="triangular2")),
        (clrjax.exp_range_schedule(0.1, 1.0, 4, 6, gamma=0.9), dict(mode="exp_range", gamma=0.9)),
    ]
    for short, kw in pairs:
        np.testing.assert_array_equal(short(t), clrjax.cyclic_schedule(0.1, 1.0, 4, 6, **kw)(t))


def test_scale_fn_overrides_mode():
    t = np.arange(30)
    custom = clrjax.cyclic_schedule(0.0, 1.0, 5, mode="triangular2", scale_fn=lambda c: 1.0 / c)
    np.testing.assert_allclose(
        custom(t), _reference(t, 0.0, 1.0, 5, 5, 1.0 / (t // 10 + 1)), rtol=1e-6
    )
    by_step = clrjax.cyclic_schedule(0.0, 1.0, 5, scale_fn=jnp.exp, scale_mode="iterations")
    np.testing.assert_allclose(by_step(3.0), 0.6 * np.exp(3.0), rtol=1e-6)


def test_momentum_mirrors_lr():
    t = np.arange(40)
    lr = clrjax.cyclic_schedule(0.0, 1.0, 3, 5, mode="triangular2")(t)
    mom = clrjax.cyclic_momentum_schedule(0.85, 0.95, 3, 5, mode="triangular2")(t)
    np.testing.assert_allclose(mom, 0.95 - 0.1 * lr, rtol=1e-6)


def test_inverted_cycle_allowed():
    sched = clrjax.cyclic_schedule(1.0, 0.2, step_size_up=2)
    np.testing.assert_allclose(sched(np.arange(5)), [1.0, 0.6, 0.2, 0.6, 1.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(mode="triangle"), "mode must be one of"),
        (dict(mode="triangle", scale_fn=jnp.exp), "mode"),
        (dict(scale_mode="step"), "scale_mode"),
        (dict(step_size_up=0), "step_size_up must be > 0, got 0"),
        (dict(step_size_up=-3), "step_size_up"),
        (dict(step_size_down=0.0), "step_size_down"),
        (dict(gamma=0.0), "gamma"),
        (dict(gamma=float("nan")), "gamma must be finite"),
        (dict(mode="exp_range", gamma=1.01), "gamma must be <= 1.0, got 1.01"),
        (dict(scale_fn="cycle"), "scale_fn must be callable"),
        (dict(max_lr=float("inf")), "max_lr must be finite"),
        # Finite in float64, but not in the float32 the schedule computes in.
        (dict(max_lr=1e39), r"max_lr must be at most 3.403e\+38 in magnitude \(float32\)"),
        (dict(step_size_up=1e-40), "step_size_up must be >= 1.175e-38"),
        (dict(step_size_up=3e38), "step_size_up \\+ step_size_down must be at most"),
        (dict(gamma=1e-40), "gamma must be >= 1.175e-38"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    full = dict(base_lr=0.1, max_lr=1.0) | kwargs
    with pytest.raises(ValueError, match=match):
        clrjax.cyclic_schedule(**full)
    full.pop("base_lr")
    full.pop("max_lr")
    if full:
        with pytest.raises(ValueError, match=match):
            clrjax.cyclic_momentum_schedule(**full)


def test_rejects_momentum_float32_cannot_hold():
    with pytest.raises(ValueError, match="base_momentum must be at most"):
        clrjax.cyclic_momentum_schedule(base_momentum=-1e39)


def test_float32_limits_do_not_apply_under_x64(x64):
    sched = clrjax.cyclic_schedule(0.1, 1e39, step_size_up=1e-40)
    assert np.isfinite(float(sched(1)))


def test_rejects_non_numeric():
    with pytest.raises(TypeError, match="base_lr"):
        clrjax.cyclic_schedule("0.1", 1.0)


LR_ARGS = {
    "base_lr": [[0.0, 0.1, 0.2], [0.3, 0.05, 0.01]],
    "max_lr": [[1.0, 2.0, 0.5], [0.2, 3.0, 1.5]],
    "step_size_up": [[1.0, 3.0, 4.5], [2.0, 7.0, 10.0]],
    "step_size_down": [[1.0, 3.0, 4.5], [2.0, 7.0, 10.0]],
    "gamma": [[0.9, 0.99, 1.0], [0.5, 0.95, 0.999]],
}


@pytest.mark.parametrize("name", list(LR_ARGS))
def test_every_numeric_argument_traces(name):
    base = dict(base_lr=0.1, max_lr=1.0, step_size_up=4, step_size_down=6, mode="exp_range")
    assert_traceable(lambda v: clrjax.cyclic_schedule(**(base | {name: v})), LR_ARGS[name], STEPS)


@pytest.mark.parametrize(
    "factory", [clrjax.triangular_schedule, clrjax.triangular2_schedule, clrjax.exp_range_schedule]
)
@pytest.mark.parametrize("name", ["base_lr", "max_lr", "step_size_up", "step_size_down"])
def test_shorthand_arguments_trace(factory, name):
    base = dict(base_lr=0.1, max_lr=1.0, step_size_up=4, step_size_down=6)
    assert_traceable(lambda v: factory(**(base | {name: v})), LR_ARGS[name], STEPS)


def test_exp_range_shorthand_gamma_traces():
    assert_traceable(
        lambda v: clrjax.exp_range_schedule(0.1, 1.0, 4, gamma=v), LR_ARGS["gamma"], STEPS
    )


@pytest.mark.parametrize("name", ["base_momentum", "max_momentum", "step_size_up"])
def test_momentum_arguments_trace(name):
    base = dict(base_momentum=0.8, max_momentum=0.9, step_size_up=4, mode="triangular2")
    values = [[0.7, 0.8, 0.85], [0.9, 0.95, 0.99]] if "mom" in name else LR_ARGS[name]
    assert_traceable(lambda v: clrjax.cyclic_momentum_schedule(**(base | {name: v})), values, STEPS)


def test_scale_fn_traces_with_arguments():
    assert_traceable(
        lambda v: clrjax.cyclic_schedule(0.0, v, 3, scale_fn=SCALE_FNS["inverse_linear"]),
        [[1.0, 2.0], [3.0, 4.0]],
        STEPS,
    )


@pytest.mark.parametrize("name", list(LR_ARGS))
@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_gradients_are_finite(name, mode):
    base = dict(base_lr=0.1, max_lr=1.0, step_size_up=4.0, step_size_down=6.0, gamma=0.99)
    # Cycle boundaries (0, 4, 10, 20), mid-phase steps, a far step and a huge one.
    steps = [0, 3, 4, 5, 10, 20, 1000, 2**40]
    assert_finite_grad(
        lambda v: clrjax.cyclic_schedule(**(base | {name: v}), mode=mode), base[name], steps
    )


@pytest.mark.parametrize("name", ["step_size_up", "step_size_down"])
@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_gradients_finite_in_degenerate_traced_settings(name, step):
    # A traced step size of 0 cannot be inspected, so it is not rejected; the
    # guards keep values and gradients finite.
    def lr(v):
        sizes = {"step_size_up": 2.0, "step_size_down": 2.0} | {name: v}
        return clrjax.cyclic_schedule(0.1, 1.0, **sizes)(step)

    val, grad = jax.value_and_grad(lr)(0.0)
    assert np.isfinite(val) and np.isfinite(grad)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_step_types(mode):
    assert_step_types(clrjax.cyclic_schedule(0.1, 1.0, 3, 5, mode=mode, gamma=0.999))
    assert_step_types(clrjax.cyclic_momentum_schedule(0.8, 0.9, 3, 5, mode=mode, gamma=0.999))


@pytest.mark.parametrize(
    "step", [2**31, 2**40, 2**31 + 3, 2**47 - 1, 3 * 2**24 + 1, 12_345_678_901]
)
def test_huge_integer_steps_are_exact_in_float32(step):
    # float32 cannot represent these steps; the position in the cycle is still exact.
    want = _reference(step % 4000, 0.1, 1.0, 2000, 2000, 1.0)
    lr = clrjax.cyclic_schedule(0.1, 1.0, 2000)
    mom = clrjax.cyclic_momentum_schedule(0.8, 0.9, 2000)
    for given in (step, np.int64(step), np.array([step], dtype=np.int64), np.float64(step)):
        np.testing.assert_allclose(lr(given), want, rtol=1e-6)
        np.testing.assert_allclose(mom(given), 0.9 - (want - 0.1) / 9, rtol=1e-6)


def test_huge_step_examples_from_the_issue():
    sched = clrjax.cyclic_schedule(0.1, 1.0, 2000)
    assert float(sched(2**31)) == pytest.approx(0.2584, abs=1e-6)  # was 0.2872
    assert float(sched(2**40)) == pytest.approx(0.20079, abs=1e-5)  # was 0.1


def test_traced_int32_steps_are_exact_under_jit():
    sched = jax.jit(clrjax.triangular2_schedule(0.0, 1.0, 3, 7))
    steps = np.array([2**31 - 1, 2**31 - 10, 2**24 + 3, 2**28 + 7], dtype=np.int64)
    got = sched(jnp.asarray(steps, dtype=jnp.int32))
    want = _reference(steps % 10, 0.0, 1.0, 3, 7, 0.5 ** (steps // 10))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    scaled = jax.jit(clrjax.cyclic_schedule(0.0, 1.0, 3, 7, scale_fn=lambda c: 1e6 / c))
    np.testing.assert_allclose(
        scaled(jnp.asarray(steps[2:], dtype=jnp.int32)),
        _reference(steps[2:] % 10, 0.0, 1.0, 3, 7, 1e6 / (steps[2:] // 10 + 1)),
        rtol=1e-6,
    )


def test_exp_range_float32_within_1e5_of_peak():
    # bckenstler's / PyTorch's exp_range over 30,000 steps: gamma = 0.99994 rounded to
    # float32 put 26,209 of them off by more than 1e-5 of the peak.
    t = np.arange(30_001)
    want = _reference(t, 0.001, 0.006, 2000, 2000, 0.99994**t)
    got = clrjax.exp_range_schedule(0.001, 0.006, 2000, gamma=0.99994)(t)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * 0.006)
    assert float(got[18_000]) == pytest.approx(0.0026979226, abs=1e-9)  # was 0.0026972541


@pytest.mark.parametrize("traced_down", [False, True])
def test_traced_zero_length_cycle_is_finite(traced_down):
    steps = np.array([0, 1, 5, 2**40])

    def lr(up):
        down = up if traced_down else None
        return clrjax.cyclic_schedule(0.1, 1.0, up, down, mode="triangular2")(steps)

    values, grads = jax.jit(lambda v: (lr(v), jax.jacobian(lr)(v)))(0.0)
    np.testing.assert_allclose(values, 0.1)
    assert np.all(np.isfinite(grads)), grads


@pytest.mark.parametrize("step", [0, 1, 2, 5])
def test_traced_gamma_zero_is_finite(step):
    def lr(gamma):
        return clrjax.exp_range_schedule(0.1, 1.0, 2, gamma=gamma)(step)

    value, grad = jax.value_and_grad(lr)(0.0)
    assert float(value) == pytest.approx(0.1) and np.isfinite(grad)  # gamma**t == 0 for t > 0


def test_huge_step_float32_stays_in_range():
    sched = clrjax.cyclic_schedule(0.1, 1.0, step_size_up=2000)
    values = np.asarray(sched(np.array([2**31 - 1, 2**40, 2**52], dtype=np.int64)))
    assert np.all((values >= 0.1 - 1e-6) & (values <= 1.0 + 1e-6))


def test_jit_with_optax_count():
    sched = clrjax.triangular_schedule(0.1, 1.0, 4)
    count = jnp.asarray(6, dtype=jnp.int32)  # optax keeps an int32 step count
    np.testing.assert_allclose(jax.jit(sched)(count), 0.55, rtol=1e-6)


def test_exp_range_finite_at_huge_steps():
    sched = clrjax.exp_range_schedule(0.1, 1.0, 4, gamma=1.0)
    assert float(sched(2**40)) == pytest.approx(0.1)
    assert np.isfinite(float(clrjax.exp_range_schedule(0.1, 1.0, 4, gamma=0.999)(2**40 + 2)))
