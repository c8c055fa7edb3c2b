"""Hypothesis properties: schedules against PyTorch's formulas, suggestion invariants,
and save/load round trips.

The schedules (in float64) are checked against a NumPy transcription of PyTorch's
``CyclicLR``, ``OneCycleLR`` and ``CosineAnnealingWarmRestarts`` (the value
after ``t`` calls of ``scheduler.step()``), over random arguments; the golden
files of ``tests/data`` pin a few cases to PyTorch itself. Every property runs
a fixed, derandomized set of examples.
"""

import itertools
import math
import os
import pickle
import tempfile

import hypothesis.extra.numpy as hnp
import numpy as np
from _schedule_checks import float64
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_schedule_choice import choices

import clrjax
from clrjax import RangeTestResult

PROFILE = settings(max_examples=60, deadline=None, derandomize=True)


def _close(got, want, scale):
    """float64 schedules against the float64 references: 1e-9 of the schedule's scale."""
    got = np.asarray(got)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * scale)


# --------------------------------------------------------------------------------------
# Schedules against NumPy transcriptions of PyTorch's formulas


def torch_cyclic(t, base_lr, max_lr, step_size_up, step_size_down, mode, gamma):
    """``CyclicLR.get_lr`` after ``t`` steps (float64)."""
    up = float(step_size_up)
    down = up if step_size_down is None else float(step_size_down)
    total = up + down
    ratio = up / total
    cycle = math.floor(1 + t / total)
    x = 1.0 + t / total - cycle
    scale_factor = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    height = (max_lr - base_lr) * scale_factor
    if mode == "triangular":
        return base_lr + height
    if mode == "triangular2":
        return base_lr + height * 0.5 ** (cycle - 1)  # 1 / 2.0 ** (cycle - 1) overflows
    return base_lr + height * gamma**t  # exp_range scales by iterations


def torch_one_cycle(t, total_steps, max_lr, pct_start, anneal, div, final_div, three_phase):
    """``OneCycleLR.get_lr`` after ``t`` steps, and its momentum (0.85 to 0.95), float64."""
    initial = max_lr / div
    low = initial / final_div
    if three_phase:
        phases = [
            (float(pct_start * total_steps) - 1, initial, max_lr, 0.95, 0.85),
            (float(2 * pct_start * total_steps) - 2, max_lr, initial, 0.85, 0.95),
            (total_steps - 1, initial, low, 0.95, 0.95),
        ]
    else:
        phases = [
            (float(pct_start * total_steps) - 1, initial, max_lr, 0.95, 0.85),
            (total_steps - 1, max_lr, low, 0.85, 0.95),
        ]

    def cos(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def linear(start, end, pct):
        return (end - start) * pct + start

    func = cos if anneal == "cos" else linear
    start_step = 0.0
    for i, (end_step, lr_a, lr_b, m_a, m_b) in enumerate(phases):
        if t <= end_step or i == len(phases) - 1:
            pct = (t - start_step) / (end_step - start_step)
            return func(lr_a, lr_b, pct), func(m_a, m_b, pct)
        start_step = end_step
    raise AssertionError("unreachable")


def torch_warm_restarts(t, base_lr, t_0, t_mult, eta_min):
    """``CosineAnnealingWarmRestarts`` after ``t`` calls of ``step()`` (float64)."""
    t_i, t_cur = t_0, t
    if t_mult == 1:
        t_cur = t % t_0
    else:
        while t_cur >= t_i:  # step(): T_cur >= T_i restarts with T_i *= T_mult
            t_cur -= t_i
            t_i *= t_mult
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


LRS = st.floats(1e-4, 10.0)
# Twelve steps at a time: one array shape, so that JAX compiles each operation once.
STEPS = st.lists(st.integers(0, 3000), min_size=12, max_size=12)


@PROFILE
@given(
    base_lr=LRS,
    max_lr=LRS,
    up=st.integers(1, 60) | st.floats(1.0, 60.0),
    down=st.none() | st.integers(1, 60) | st.floats(1.0, 60.0),
    mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
    gamma=st.floats(0.99, 1.0),
    steps=STEPS,
)
def test_cyclic_matches_torch(base_lr, max_lr, up, down, mode, gamma, steps):
    with float64():
        _check_cyclic(base_lr, max_lr, up, down, mode, gamma, steps)


def _check_cyclic(base_lr, max_lr, up, down, mode, gamma, steps):
    sched = clrjax.cyclic_schedule(base_lr, max_lr, up, down, mode=mode, gamma=gamma)
    want = [torch_cyclic(t, base_lr, max_lr, up, down, mode, gamma) for t in steps]
    _close(sched(np.array(steps)), want, max(base_lr, max_lr))
    named = {
        "triangular": clrjax.triangular_schedule(base_lr, max_lr, up, down),
        "triangular2": clrjax.triangular2_schedule(base_lr, max_lr, up, down),
        "exp_range": clrjax.exp_range_schedule(base_lr, max_lr, up, down, gamma=gamma),
    }[mode]
    np.testing.assert_array_equal(named(np.array(steps)), sched(np.array(steps)))


@PROFILE
@given(
    total_steps=st.integers(4, 5000),
    max_lr=LRS,
    pct_start=st.floats(0.05, 0.95),
    anneal=st.sampled_from(["cos", "linear"]),
    div=st.floats(1.0, 100.0),
    final_div=st.floats(1.0, 1e4),
    three_phase=st.booleans(),
    data=st.data(),
)
def test_one_cycle_matches_torch(
    total_steps, max_lr, pct_start, anneal, div, final_div, three_phase, data
):
    # PyTorch divides by each phase's length: every phase is at least one step long.
    warm = pct_start * total_steps
    ends = [warm - 1, 2 * warm - 2] if three_phase else [warm - 1]
    ends.append(total_steps - 1)
    assume(ends[0] >= 1 and all(b - a >= 1 for a, b in itertools.pairwise(ends)))
    steps = data.draw(st.lists(st.integers(0, total_steps - 1), min_size=12, max_size=12))
    kw = dict(pct_start=pct_start, anneal_strategy=anneal, three_phase=three_phase)
    with float64():
        lr = clrjax.one_cycle_schedule(
            total_steps, max_lr, div_factor=div, final_div_factor=final_div, **kw
        )(np.array(steps))
        momentum = clrjax.one_cycle_momentum_schedule(total_steps, **kw)(np.array(steps))
    want = [
        torch_one_cycle(t, total_steps, max_lr, pct_start, anneal, div, final_div, three_phase)
        for t in steps
    ]
    _close(lr, [w[0] for w in want], max_lr)
    _close(momentum, [w[1] for w in want], 1.0)


@PROFILE
@given(
    base_lr=LRS,
    t_0=st.integers(1, 50),
    t_mult=st.integers(1, 4),
    eta_min=st.floats(0.0, 1e-4),
    steps=st.lists(st.integers(0, 10**5), min_size=12, max_size=12),
)
def test_warm_restarts_match_torch(base_lr, t_0, t_mult, eta_min, steps):
    with float64():
        sched = clrjax.cosine_warm_restarts_schedule(base_lr, t_0, t_mult=t_mult, eta_min=eta_min)
        got = sched(np.array(steps))
    want = [torch_warm_restarts(t, base_lr, t_0, t_mult, eta_min) for t in steps]
    _close(got, want, base_lr)


# --------------------------------------------------------------------------------------
# Suggestion invariants


@st.composite
def curves(draw, lanes=False):
    """``(lrs, losses)``: an exponential ramp and finite losses (``(lanes, n)`` or ``(n,)``)."""
    n = draw(st.integers(2, 60))
    low = draw(st.floats(1e-8, 1.0))
    lrs = np.geomspace(low, low * 10.0 ** draw(st.floats(0.5, 10.0)), n)
    shape = (draw(st.integers(1, 4)), n) if lanes else (n,)
    losses = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e3, 1e3), fill=st.nothing()))
    return lrs, losses


METHODS = st.sampled_from(clrjax.SUGGESTION_METHODS)
SKIPS = st.integers(0, 8)
FACTORS = {"minimum": 0.1}


@PROFILE
@given(curves(lanes=True), METHODS, SKIPS, SKIPS)
def test_a_suggestion_is_a_learning_rate_of_the_curve(curve, method, skip_start, skip_end):
    lrs, losses = curve
    picks = clrjax.suggest(lrs, losses, method, skip_start=skip_start, skip_end=skip_end)
    assert picks.shape == (losses.shape[0],) and picks.dtype == np.float64
    for pick in picks[~np.isnan(picks)]:
        lr = pick / FACTORS.get(method, 1.0)
        assert lrs[0] <= lr * (1 + 1e-12) and lr <= lrs[-1] * (1 + 1e-12)
        assert np.any(np.isclose(lr, lrs, rtol=1e-12, atol=0)), (method, pick)
    # Enough points after trimming (2, and lr_diff + 1 = 16 for slide): a pick.
    needed = 16 if method == "slide" else 2
    assert np.isnan(picks).all() == (len(lrs) - skip_start - skip_end < needed)


@PROFILE
@given(
    curves(),
    METHODS.filter(lambda m: m != "slide"),
    SKIPS,
    SKIPS,
    st.sampled_from([-40, -20, -8, -1, 1, 8, 20, 40]),
)
def test_suggestions_ignore_the_loss_scale(curve, method, skip_start, skip_end, power):
    # A power of two scales exactly.
    lrs, losses = curve
    kw = dict(skip_start=skip_start, skip_end=skip_end)
    a = clrjax.suggest(lrs, losses, method, **kw)
    b = clrjax.suggest(lrs, losses * 2.0**power, method, **kw)
    assert a == b or (np.isnan(a) and np.isnan(b))


@PROFILE
@given(
    st.integers(20, 60).flatmap(
        lambda n: hnp.arrays(np.float64, n, elements=st.floats(-1.0, 1.0), fill=st.nothing())
    ),
    st.floats(1e-3, 1.0),
    st.integers(1, 15),
    st.integers(-12, 12),
)
def test_slide_scales_with_its_thresh(steps, thresh, lr_diff, power):
    # slide's thresh is in loss units: scaling the loss and thresh together changes nothing.
    losses = np.cumsum(steps)  # a curve whose gradients differ by about thresh
    lrs = np.geomspace(1e-5, 10.0, len(losses))
    scale = 2.0**power
    kw = dict(skip_start=0, skip_end=0, lr_diff=lr_diff)
    a = clrjax.suggest(lrs, losses, "slide", thresh=thresh, **kw)
    b = clrjax.suggest(lrs, losses * scale, "slide", thresh=thresh * scale, **kw)
    assert a == b


@PROFILE
@given(
    curves(),
    METHODS,
    SKIPS,
    SKIPS,
    st.lists(st.sampled_from([np.nan, np.inf, -np.inf, 1.0, -5.0]), min_size=1, max_size=20),
    st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_a_non_finite_tail_ends_the_curve(curve, method, skip_start, skip_end, tail, first):
    lrs, losses = curve
    tail = np.array([first, *tail])
    ramp = np.concatenate([lrs, lrs[-1] * np.geomspace(1.5, 10.0, len(tail))])
    longer = np.concatenate([losses, tail])
    kw = dict(skip_start=skip_start, skip_end=skip_end)
    # "stopped": the record is the finite prefix.
    a = clrjax.suggest(ramp, longer, method, **kw)
    b = clrjax.suggest(lrs, losses, method, **kw)
    assert a == b or (np.isnan(a) and np.isnan(b))
    # "recorded": skip_end trims the whole record, then the curve is cut at the tail.
    kept = max(len(longer) - skip_end, 0)
    c = clrjax.suggest(ramp, longer, method, non_finite="recorded", **kw)
    d = clrjax.suggest(ramp[:kept], longer[:kept], method, skip_start=skip_start, skip_end=0)
    assert c == d or (np.isnan(c) and np.isnan(d))


@PROFILE
@given(curves(lanes=True), METHODS)
def test_a_spread_is_ordered_and_counts_the_picks(curve, method):
    lrs, losses = curve
    picks = clrjax.suggest(lrs, losses, method, skip_start=0, skip_end=0)
    spread = clrjax.suggest_spread(lrs, losses, method, skip_start=0, skip_end=0)
    finite = picks[np.isfinite(picks)]
    assert spread.count == finite.size
    if finite.size:
        assert finite.min() == spread.low <= spread.median <= spread.high == finite.max()


# --------------------------------------------------------------------------------------
# Round trips


@st.composite
def results(draw):
    lanes, steps = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    special = st.sampled_from([np.nan, np.inf, -np.inf])
    values = st.floats(-1e6, 1e6, width=32) | special
    losses = draw(hnp.arrays(np.float32, (lanes, steps), elements=values))
    names = draw(st.lists(st.sampled_from(["weight_decay", "b1", "seed", "x/y", ""]), unique=True))
    hparams = {
        name: draw(
            hnp.arrays(
                draw(st.sampled_from([np.float64, np.int64, np.bool_])),
                lanes,
                elements=None,
            ).filter(lambda a: a.dtype.kind != "f" or np.isfinite(a).all())
        )
        for name in names
    }
    kw = dict(
        lrs=np.sort(draw(hnp.arrays(np.float64, steps, elements=st.floats(1e-8, 10.0)))),
        losses=losses,
        smoothed=draw(hnp.arrays(np.float32, (lanes, steps), elements=values)),
        diverged_at=draw(hnp.arrays(np.int64, lanes, elements=st.integers(-1, steps - 1))),
        hparams=hparams,
        grid_names=tuple(n for n in names if draw(st.booleans())),
        strategy=draw(st.text(max_size=8)),
    )
    if draw(st.booleans()):
        val_steps = draw(st.lists(st.integers(0, steps - 1), unique=True))
        kw["val_steps"] = np.array(sorted(val_steps), dtype=np.int64)
        kw["val_losses"] = draw(hnp.arrays(np.float32, (lanes, len(val_steps)), elements=values))
    return RangeTestResult(**kw)


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


@PROFILE
@given(results())
def test_a_result_survives_save_load_and_pickle(result):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "result.npz")
        result.save(path)
        copies = [RangeTestResult.load(path), pickle.loads(pickle.dumps(result))]
    for copy in copies:
        for field in ("lrs", "losses", "smoothed", "diverged_at", "val_steps", "val_losses"):
            assert _same(getattr(result, field), getattr(copy, field)), field
        assert list(copy.hparams) == list(result.hparams)
        assert all(_same(result.hparams[k], copy.hparams[k]) for k in result.hparams)
        assert (copy.grid_names, copy.strategy) == (result.grid_names, result.strategy)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(choices())
def test_a_choice_saved_again_writes_the_same_file(choice):
    # ScheduleChoice's round trip itself: test_schedule_choice.test_save_load_round_trip.
    with tempfile.TemporaryDirectory() as folder:
        first, second = os.path.join(folder, "a.npz"), os.path.join(folder, "b.npz")
        choice.save(first)
        clrjax.ScheduleChoice.load(first).save(second)
        with np.load(first) as a, np.load(second) as b:
            assert sorted(a.files) == sorted(b.files)
            for name in a.files:
                assert a[name].dtype == b[name].dtype, name
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
