"""Tests for clrjax._one_cycle (1cycle LR and momentum, three conventions)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _schedule_checks import (
    GOLDENS,
    assert_finite_grad,
    assert_matches_torch,
    assert_step_types,
    assert_traceable,
)

import clrjax

CASES = GOLDENS["one_cycle"]
CONVENTIONS = ["torch", "fastai", "optax"]
LR_ONLY = ("max_lr", "div_factor", "final_div_factor")
MOMENTUM_ONLY = ("base_momentum", "max_momentum")


def _build(kwargs):
    """(lr schedule, momentum schedule) for a golden entry's kwargs."""
    lr = clrjax.one_cycle_schedule(**{k: v for k, v in kwargs.items() if k not in MOMENTUM_ONLY})
    momentum = clrjax.one_cycle_momentum_schedule(
        **{k: v for k, v in kwargs.items() if k not in LR_ONLY}
    )
    return lr, momentum


def _fastai_reference(n, max_lr, pct=0.25, div=25.0, div_final=1e5, moms=(0.95, 0.85, 0.95)):
    """fastai's fit_one_cycle: combined_cos at position i / n, in NumPy."""
    pos = np.arange(n + 1) / n

    def sched_cos(start, end, p):
        return start + (1 + np.cos(np.pi * (1 - p))) * (end - start) / 2

    def combined(start, middle, end):
        return np.where(
            pos < pct,
            sched_cos(start, middle, pos / pct),
            sched_cos(middle, end, (pos - pct) / (1 - pct)),
        )

    return combined(max_lr / div, max_lr, max_lr / div_final), combined(*moms)


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["kwargs"]))
def test_matches_torch_float32(case):
    assert_matches_torch(_build, case, x64=False)


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["kwargs"]))
def test_matches_torch_float64(case, x64):
    assert_matches_torch(_build, case, x64=True)


def test_goldens_cover_the_variants():
    kwargs = [c["kwargs"] for c in CASES]
    assert {k.get("anneal_strategy", "cos") for k in kwargs} == {"cos", "linear"}
    assert any(k.get("three_phase") for k in kwargs)
    assert {1, 2, 3, 5} <= {k["total_steps"] for k in kwargs}
    assert max(k["total_steps"] for k in kwargs) >= 100_000


@pytest.mark.parametrize(
    ("n", "pct", "div", "div_final"),
    [(100, None, 25.0, None), (37, 0.3, 10.0, 1e4), (8, 0.25, 25.0, 1e5), (3, 0.5, 5.0, 100.0)],
)
def test_fastai_convention(n, pct, div, div_final):
    lr_want, mom_want = _fastai_reference(
        n, 0.5, 0.25 if pct is None else pct, div, 1e5 if div_final is None else div_final
    )
    steps = np.arange(n + 1)
    lr = clrjax.one_cycle_schedule(
        n, 0.5, pct, div_factor=div, final_div_factor=div_final, convention="fastai"
    )
    mom = clrjax.one_cycle_momentum_schedule(n, pct, convention="fastai")
    np.testing.assert_allclose(lr(steps), lr_want, rtol=2e-6, atol=1e-6 * 0.5)
    np.testing.assert_allclose(mom(steps), mom_want, rtol=1e-6)


@pytest.mark.parametrize(
    ("n", "pct", "div", "final_div"),
    [(100, 0.3, 25.0, 1e4), (37, 0.25, 10.0, 100.0), (3, 0.3, 25.0, 1e4), (100, 0.29, 4.0, 10.0)],
)
def test_optax_convention_matches_optax(n, pct, div, final_div):
    steps = np.arange(-2, n + 5)
    ours = clrjax.one_cycle_schedule(n, 0.7, pct, "cos", div, final_div, convention="optax")
    reference = optax.cosine_onecycle_schedule(n, 0.7, pct, div, final_div)
    want = np.array([float(reference(s)) for s in steps])  # optax takes scalar steps
    # optax returns 0 for negative steps; clrjax treats them as step 0.
    np.testing.assert_allclose(ours(steps[2:]), want[2:], rtol=2e-6, atol=1e-6 * 0.7)
    np.testing.assert_allclose(ours(steps[:2]), ours(0))


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_convention_defaults(convention):
    explicit = {"torch": (0.3, 1e4), "fastai": (0.25, 1e5), "optax": (0.3, 1e4)}[convention]
    steps = np.arange(0, 105)
    default = clrjax.one_cycle_schedule(100, 1.0, convention=convention)(steps)
    given = clrjax.one_cycle_schedule(
        100, 1.0, explicit[0], final_div_factor=explicit[1], convention=convention
    )(steps)
    np.testing.assert_array_equal(default, given)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("three_phase", [False, True])
def test_holds_final_value_past_the_end(convention, three_phase):
    n = 20
    lr = clrjax.one_cycle_schedule(n, 1.0, 0.3, three_phase=three_phase, convention=convention)
    mom = clrjax.one_cycle_momentum_schedule(n, 0.3, three_phase=three_phase, convention=convention)
    last = n - 1 if convention == "torch" else n
    final = 1.0 / 25 / 1e4 if convention != "fastai" else 1.0 / 1e5
    np.testing.assert_allclose(lr(np.array([last, last + 1, 10 * n, 2**40])), final, rtol=1e-5)
    np.testing.assert_allclose(mom(np.array([last, last + 1, 2**40])), 0.95, rtol=1e-6)
    np.testing.assert_allclose(lr(-3), 1.0 / 25, rtol=1e-6)


def test_three_phase_shape():
    lr = clrjax.one_cycle_schedule(100, 1.0, 0.3, anneal_strategy="linear", three_phase=True)
    np.testing.assert_allclose(lr(np.array([0, 29, 58])), [0.04, 1.0, 0.04], rtol=1e-5)
    np.testing.assert_allclose(lr(99), 0.04 / 1e4, rtol=1e-5)


@pytest.mark.parametrize(
    ("n", "pct", "three_phase"), [(5, 0.2, False), (10, 0.1, True), (1, 0.5, False), (2, 0.5, True)]
)
def test_zero_length_phases_give_end_values(n, pct, three_phase):
    # PyTorch divides by zero here (ZeroDivisionError); clrjax takes the end value.
    lr = clrjax.one_cycle_schedule(n, 1.0, pct, three_phase=three_phase)
    values = np.asarray(lr(np.arange(n + 2)))
    assert np.all(np.isfinite(values))
    if n * pct == 1:  # step 0 is the end of the zero-length warm-up
        np.testing.assert_allclose(values[0], 1.0, rtol=1e-6)
    for name, value in [("max_lr", 1.0), ("pct_start", pct), ("total_steps", float(n))]:
        args = dict(total_steps=n, max_lr=1.0, pct_start=pct, three_phase=three_phase)
        assert_finite_grad(
            lambda v, name=name, args=args: clrjax.one_cycle_schedule(**(args | {name: v})),
            value,
            range(n + 1),
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(convention="keras"), "convention must be one of"),
        (dict(anneal_strategy="cosine"), "anneal_strategy must be one of"),
        (dict(total_steps=0), "total_steps must be > 0, got 0"),
        (dict(total_steps=-10), "total_steps"),
        (dict(pct_start=0.0), r"pct_start must be in \(0.0, 1.0\), got 0.0"),
        (dict(pct_start=1.0), "pct_start"),
        (dict(pct_start=1.5), "pct_start"),
        (dict(three_phase="yes"), "three_phase must be a bool"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    base = dict(total_steps=100) | kwargs
    with pytest.raises(ValueError, match=match):
        clrjax.one_cycle_schedule(max_lr=1.0, **base)
    with pytest.raises(ValueError, match=match):
        clrjax.one_cycle_momentum_schedule(**base)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(div_factor=0.0), "div_factor must be > 0"),
        (dict(final_div_factor=-1.0), "final_div_factor must be > 0"),
        (dict(max_lr=float("nan")), "max_lr must be finite"),
    ],
)
def test_rejects_bad_lr_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        clrjax.one_cycle_schedule(**(dict(total_steps=10, max_lr=1.0) | kwargs))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # Finite in float64, but NaN or inf in the float32 the schedule computes in.
        (dict(final_div_factor=1e-40), "final_div_factor must be >= 1.175e-38"),
        (dict(div_factor=1e-40), "div_factor must be >= 1.175e-38"),
        (dict(total_steps=1e39), r"total_steps must be at most 3.403e\+38"),
        (dict(max_lr=1e10, div_factor=1e-30), "max_lr / div_factor must be at most"),
        (dict(max_lr=1e3, final_div_factor=1e-37), "initial LR / final_div_factor must be at"),
        (dict(max_lr=1e3, final_div_factor=1e-36, convention="fastai"), "max_lr / final_div"),
        (dict(max_lr=-1e39), "max_lr must be at most"),
    ],
)
def test_rejects_values_float32_cannot_hold(kwargs, match):
    with pytest.raises(ValueError, match=match):
        clrjax.one_cycle_schedule(**(dict(total_steps=10, max_lr=1.0) | kwargs))


def test_float32_limits_do_not_apply_under_x64(x64):
    sched = clrjax.one_cycle_schedule(10, 1.0, div_factor=1e-40, final_div_factor=1e-40)
    assert np.all(np.isfinite(sched(np.arange(10))))


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_phase_ends_computed_in_float64(convention):
    # (0.5 + 1e-9) * 2 - 1 is 2e-9 in float64, 0 in float32: PyTorch gives 0.04 at step 0.
    sched = clrjax.one_cycle_schedule(2, 1.0, pct_start=0.5 + 1e-9, convention=convention)
    for schedule in (sched, jax.jit(sched)):
        assert float(schedule(0)) == pytest.approx(0.04)  # was 1.0 (torch convention)
    mom = clrjax.one_cycle_momentum_schedule(2, pct_start=0.5 + 1e-9, convention=convention)
    assert float(mom(0)) == pytest.approx(0.95)


def test_rejects_bad_momentum():
    with pytest.raises(ValueError, match="base_momentum must be finite"):
        clrjax.one_cycle_momentum_schedule(10, base_momentum=float("inf"))
    with pytest.raises(ValueError, match="max_momentum must be at most"):
        clrjax.one_cycle_momentum_schedule(10, max_momentum=1e39)
    with pytest.raises(ValueError, match="total_steps must be at most"):
        clrjax.one_cycle_momentum_schedule(1e39)


LR_ARGS = {
    "total_steps": [[10.0, 37.0, 100.0], [3.0, 1000.0, 64.0]],
    "max_lr": [[1.0, 0.1, 3.0], [0.5, 2.0, 0.01]],
    "pct_start": [[0.3, 0.1, 0.5], [0.25, 0.9, 0.05]],
    "div_factor": [[25.0, 10.0, 1.0], [100.0, 2.0, 5.0]],
    "final_div_factor": [[1e4, 10.0, 1.0], [1e5, 2.0, 100.0]],
}
STEPS = np.array([0, 1, 2, 5, 9, 10, 11, 29, 30, 50, 99, 100, 150])


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("name", list(LR_ARGS))
def test_every_lr_argument_traces(name, convention):
    base = dict(total_steps=100, max_lr=1.0, pct_start=0.3, three_phase=name == "pct_start")
    assert_traceable(
        lambda v: clrjax.one_cycle_schedule(**(base | {name: v}), convention=convention),
        LR_ARGS[name],
        STEPS,
    )


@pytest.mark.parametrize("name", ["total_steps", "pct_start", "base_momentum", "max_momentum"])
def test_every_momentum_argument_traces(name):
    values = {"base_momentum": [[0.8, 0.85], [0.9, 0.5]], "max_momentum": [[0.95, 0.99], [0.9, 1]]}
    assert_traceable(
        lambda v: clrjax.one_cycle_momentum_schedule(**({"total_steps": 100, name: v})),
        values.get(name, LR_ARGS.get(name)),
        STEPS,
    )


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("name", list(LR_ARGS))
def test_gradients_are_finite(name, convention):
    base = dict(total_steps=10.0, max_lr=1.0, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    make = lambda v: clrjax.one_cycle_schedule(**(base | {name: v}), convention=convention)
    assert_finite_grad(make, base[name], [0, 1, 2, 3, 5, 9, 10, 11, 2**40])


@pytest.mark.parametrize("name", ["base_momentum", "max_momentum", "pct_start"])
def test_momentum_gradients_are_finite(name):
    base = dict(total_steps=10.0, pct_start=0.3, base_momentum=0.85, max_momentum=0.95)
    make = lambda v: clrjax.one_cycle_momentum_schedule(**(base | {name: v}), three_phase=True)
    assert_finite_grad(make, base[name], [0, 2, 3, 4, 9, 10])


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_step_types(convention):
    assert_step_types(clrjax.one_cycle_schedule(30, 1.0, convention=convention))
    assert_step_types(clrjax.one_cycle_momentum_schedule(30, convention=convention))


def test_works_as_optax_learning_rate():
    opt = optax.sgd(clrjax.one_cycle_schedule(10, 1.0))
    params = jnp.zeros(2)
    state = opt.init(params)
    for _ in range(3):
        _, state = jax.jit(opt.update)(jnp.ones(2), state, params)
    assert int(optax.tree.get(state, "count")) == 3
