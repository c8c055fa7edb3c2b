"""A deterministic fuzz test of the public API with bad and edge-case inputs.

Every call must either succeed with finite, sane output or raise ``ValueError``
or ``TypeError`` (``MemoryError`` where documented) whose message names the
offending argument. Any other exception fails the test, and so does a warning
(the suite turns warnings into errors) or a case that hangs (``_HANG_SECONDS``).

Cases are (argument, bad value) tables, each value put alone into a valid
call, plus combinations of several drawn from seeded NumPy generators. The
range tests and ``find_schedule`` run their argument validation only (the
engine is replaced by a stub that stops the call where the lanes would start
compiling); a few tiny runs then check that accepted edge cases give sane
results.
"""

import contextlib
import functools
import inspect
import pickle
import signal

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import pytest
from _flat_options import fold

import clrjax
from clrjax import RangeTestResult, plotting

_HANG_SECONDS = 120  # no single case comes near this, even on a loaded machine

NAN, INF = float("nan"), float("inf")
F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)


@pytest.fixture(autouse=True)
def _no_hang():
    """Fails a case that runs for more than ``_HANG_SECONDS`` (where SIGALRM exists)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def hung(signum, frame):
        raise TimeoutError(f"a fuzz case ran for more than {_HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, _HANG_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _outcome(call, names, *, memory=False):
    """Runs ``call()``: ``(True, result)``, or ``(False, None)`` after a refusal naming ``names``.

    Any other exception (or a warning, an error in this suite) propagates and
    fails the test.
    """
    refusals = (ValueError, TypeError, MemoryError) if memory else (ValueError, TypeError)
    try:
        return True, call()
    except refusals as e:
        message = str(e)
        assert any(name in message for name in names), (
            f"{type(e).__name__} names none of {names}: {message}"
        )
        return False, None


def _folded(fn, *args, **kw):
    """``fn`` with the flat option fields of these tables folded into option objects."""
    return fn(*args, **fold(fn, kw))


def _named(fn, names):
    """``names`` and, for keywords that moved, the option fields they moved to."""
    moved = fn.moved_keywords
    return (*names, *(f"{moved[n][0].capitalize()}.{moved[n][1]}" for n in names if n in moved))


def _label(value):
    """A short test id for a value."""
    if callable(value) and not isinstance(value, type):
        return getattr(value, "__name__", "callable")
    text = repr(value).replace("\n", "")
    return text if len(text) <= 24 else text[:21] + "..."


# Numeric arguments get every one of these, alone, in a valid call.
NUMBERS = [
    0,
    -1,
    -1e-3,
    0.5,
    NAN,
    INF,
    -INF,
    1e39,
    -1e39,
    F32_MAX,
    -F32_MAX,
    1e-40,
    F32_TINY,
    2**70,
    True,
    False,
    "0.1",
    b"1",
    None,
    1j,
    object(),
    {"a": 1.0},
    [[1.0], [1.0, 2.0]],
    [[0.5] * 3] * 2,
    np.zeros((2, 3)),
    np.float32(NAN),
    np.int64(3),
    jnp.array(INF),
    jnp.float32(0.5),
]
STRINGS = ["bogus", "", None, 1, ("x",), b"cos"]


# --------------------------------------------------------------------------------------
# Schedules


def _one_cycle_bounds(kw):
    fastai = kw["convention"] == "fastai"
    peak = kw["max_lr"]
    initial = peak / kw["div_factor"]
    final_div = kw["final_div_factor"] or (1e5 if fastai else 1e4)
    final = (peak if fastai else initial) / final_div
    return (peak, initial, final)


# name -> (factory, valid keyword arguments, the values every output lies between)
SCHEDULES = {
    "cyclic": (
        clrjax.cyclic_schedule,
        dict(
            base_lr=0.01,
            max_lr=1.0,
            step_size_up=3,
            step_size_down=5,
            mode="exp_range",
            gamma=0.999,
            scale_fn=None,
            scale_mode="cycle",
        ),
        lambda kw: (kw["base_lr"], kw["max_lr"]),
    ),
    "triangular": (
        clrjax.triangular_schedule,
        dict(base_lr=0.01, max_lr=1.0, step_size_up=3, step_size_down=None),
        lambda kw: (kw["base_lr"], kw["max_lr"]),
    ),
    "triangular2": (
        clrjax.triangular2_schedule,
        dict(base_lr=1.0, max_lr=0.01, step_size_up=2.5, step_size_down=4),
        lambda kw: (kw["base_lr"], kw["max_lr"]),
    ),
    "exp_range": (
        clrjax.exp_range_schedule,
        dict(base_lr=0.01, max_lr=1.0, step_size_up=3, step_size_down=7, gamma=0.99),
        lambda kw: (kw["base_lr"], kw["max_lr"]),
    ),
    "cyclic_momentum": (
        clrjax.cyclic_momentum_schedule,
        dict(
            base_momentum=0.8,
            max_momentum=0.9,
            step_size_up=3,
            step_size_down=None,
            mode="triangular",
            gamma=1.0,
            scale_fn=None,
            scale_mode="cycle",
        ),
        lambda kw: (kw["base_momentum"], kw["max_momentum"]),
    ),
    "one_cycle": (
        clrjax.one_cycle_schedule,
        dict(
            total_steps=10,
            max_lr=1.0,
            pct_start=None,
            anneal_strategy="cos",
            div_factor=25.0,
            final_div_factor=None,
            three_phase=True,
            convention="torch",
        ),
        _one_cycle_bounds,
    ),
    "one_cycle_momentum": (
        clrjax.one_cycle_momentum_schedule,
        dict(
            total_steps=10,
            pct_start=0.4,
            anneal_strategy="linear",
            base_momentum=0.85,
            max_momentum=0.95,
            three_phase=False,
            convention="fastai",
        ),
        lambda kw: (kw["base_momentum"], kw["max_momentum"]),
    ),
    "warm_restarts": (
        clrjax.cosine_warm_restarts_schedule,
        dict(base_lr=1.0, t_0=3, t_mult=2, eta_min=0.01),
        lambda kw: (kw["base_lr"], kw["eta_min"]),
    ),
}
# Values of the structural arguments (the valid ones are covered as well).
CHOICES = {
    "mode": [*STRINGS, "Triangular", "triangular", "triangular2"],
    "scale_mode": [*STRINGS, "iterations"],
    "anneal_strategy": [*STRINGS, "COS", "linear"],
    "convention": [*STRINGS, "pytorch", "fastai", "optax"],
    "three_phase": [1, 0, "True", None, np.bool_(True), False],
    "scale_fn": [5, "x", [1.0], lambda x: 1.0 / (1.0 + x), jnp.ones_like],
}
# Steps: Python integers (split on the host, beyond int32 too), a NumPy array
# and a JAX int32 scalar (split with integer operations). Every JAX operation
# compiles once per new combination of shapes, so the cases of one argument
# each take one scalar step, in turn, and only the random combinations (and
# only arrays of one shape) take the others too.
SCALAR_STEPS = [0, 1, 7, 2**31, 2**40]
OTHER_STEPS = [np.array(SCALAR_STEPS), jnp.int32(2**31 - 1)]


def _schedule_cases():
    cases = (
        (name, arg, value)
        for name, (_, valid, _) in SCHEDULES.items()
        for arg in valid
        for value in CHOICES.get(arg, NUMBERS)
    )
    for i, (name, arg, value) in enumerate(cases):
        step = SCALAR_STEPS[i % len(SCALAR_STEPS)]
        yield pytest.param(name, arg, value, step, id=f"{name}-{arg}-{_label(value)}")


def _check_schedule(name, kw, mutated, steps):
    """Builds schedule ``name`` from ``kw``; checks it at each of ``steps``."""
    factory, _, bounds = SCHEDULES[name]
    built, schedule = _outcome(lambda: factory(**kw), mutated)
    if not built:
        return
    scalar_args = all(np.ndim(v) == 0 for v in kw.values() if not callable(v))
    for step in steps:
        # An array step must broadcast with array arguments; else "step" is named.
        ok, value = _outcome(lambda step=step: schedule(step), ("step",))
        assert ok or not scalar_args, f"{name}({kw}) refused step {step!r}"
        if not ok:
            continue
        value = np.asarray(value)
        assert value.dtype.kind == "f", f"{name}({kw})({step!r}) has dtype {value.dtype}"
        assert np.all(np.isfinite(value)), f"{name}({kw})({step!r}) = {value}"
        if scalar_args and kw.get("scale_fn") is None:
            low, high = (f(np.asarray(bounds(kw), dtype=np.float64)) for f in (np.min, np.max))
            slack = 1e-6 * max(abs(low), abs(high)) + F32_TINY  # float32 rounding and flushing
            assert np.all((value >= low - slack) & (value <= high + slack)), (
                f"{name}({kw})({step!r}) = {value} leaves [{low}, {high}]"
            )


@pytest.mark.parametrize(("name", "arg", "value", "step"), list(_schedule_cases()))
def test_schedule_argument(name, arg, value, step):
    """Each schedule factory with one argument replaced by a bad or edge-case value."""
    kw = dict(SCHEDULES[name][1], **{arg: value})
    _check_schedule(name, kw, (arg,), [step])


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_random_combinations(name):
    """Each schedule factory with 2-3 arguments replaced at once (seeded draws)."""
    rng = np.random.default_rng(sorted(SCHEDULES).index(name))
    valid = SCHEDULES[name][1]
    for i in range(20):
        args = rng.choice(list(valid), size=min(len(valid), rng.integers(2, 4)), replace=False)
        kw = dict(valid)
        for arg in args:
            values = CHOICES.get(arg, NUMBERS)
            kw[arg] = values[rng.integers(len(values))]
        _check_schedule(name, kw, tuple(args), [SCALAR_STEPS[i % 5], *OTHER_STEPS])


def test_schedule_spans_that_overflow_are_refused():
    # Regression: each bound fits float32 but their difference does not; the
    # schedules returned inf or NaN instead of refusing.
    cases = [
        (clrjax.cyclic_schedule, dict(base_lr=3e38, max_lr=-3e38), "max_lr - base_lr"),
        (
            clrjax.cyclic_momentum_schedule,
            dict(base_momentum=3e38, max_momentum=-3e38),
            "max_momentum - base_momentum",
        ),
        (
            clrjax.one_cycle_momentum_schedule,
            dict(total_steps=10, base_momentum=3e38, max_momentum=-3e38),
            "max_momentum - base_momentum",
        ),
        (
            clrjax.cosine_warm_restarts_schedule,
            dict(base_lr=3e38, t_0=5, eta_min=-3e38),
            "base_lr - eta_min",
        ),
    ]
    for factory, kw, name in cases:
        with pytest.raises(ValueError, match=name.replace("-", r"\-")):
            factory(**kw)
    # A span that fits, with values near the float32 maximum: finite throughout.
    sched = clrjax.cosine_warm_restarts_schedule(3e38, 5, eta_min=0.0)
    assert all(np.isfinite(sched(step)) for step in SCALAR_STEPS)


def test_schedule_arrays_that_do_not_broadcast_are_refused():
    # Regression: these failed inside JAX at the first call, naming no argument.
    with pytest.raises(ValueError, match=r"max_lr \(3,\), base_lr \(2,\)"):
        clrjax.cyclic_schedule(np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="div_factor"):
        clrjax.one_cycle_schedule(10, np.ones(2), div_factor=np.full(3, 25.0))
    sched = clrjax.triangular_schedule(np.array([0.1, 0.2]), 1.0, 3)
    with pytest.raises(ValueError, match=r"step of shape \(5,\)"):
        sched(np.arange(5))
    with pytest.raises(TypeError, match="step must be a number"):
        sched("3")
    assert np.asarray(sched(2**31)).shape == (2,)


# --------------------------------------------------------------------------------------
# clrjax.scheduled


def _momentum_schedule(t):
    return 0.9 - 0.05 * jnp.cos(t)


# (factory, keyword arguments) valid calls; every hyperparameter is mutated.
SCHEDULED = {
    "sgd": (optax.sgd, dict(learning_rate=0.1, momentum=_momentum_schedule, nesterov=True)),
    "adamw": (optax.adamw, dict(learning_rate=1e-3, b1=0.9, weight_decay=1e-4)),
    "pytorch_sgd": (clrjax.pytorch_sgd, dict(learning_rate=0.1, momentum=0.9)),
}
# Values whose updates must be finite, and values that must be refused or may
# give anything (optax, not clrjax, defines what b1=-1 or learning_rate=inf do).
SCHEDULED_SANE = [0, 0.5, np.float32(0.5), jnp.float32(0.5), np.array(0.5), lambda t: 0.9 - 0.5**t]
SCHEDULED_ODD = [NAN, INF, 1e39, F32_MAX, -1.0, "0.1", b"1", jnp.array(NAN)]
# Static values for a parameter whose default is a number. Parameters without
# one (learning_rate, sgd's momentum=None) pass such values on to optax, whose
# errors name no argument: left out.
SCHEDULED_STATIC = [None, True, [0.9], {"a": 1}, object(), jnp.float32, 1j]


def _scheduled_cases():
    for name, (factory, valid) in SCHEDULED.items():
        defaults = inspect.signature(factory).parameters
        for arg in valid:
            numeric_default = isinstance(defaults[arg].default, (int, float))
            static = SCHEDULED_STATIC if numeric_default else []
            for values, sane in ((SCHEDULED_SANE, True), (SCHEDULED_ODD + static, False)):
                for value in values:
                    yield pytest.param(name, arg, value, sane, id=f"{name}-{arg}-{_label(value)}")


def _check_scheduled(factory, kw, names, *, sane=False):
    """``scheduled(factory, **kw)`` is refused, naming ``names``, or takes two steps
    (with finite updates when ``sane``)."""
    built, opt = _outcome(lambda: clrjax.scheduled(factory, **kw), names)
    if not built:
        return
    params = jnp.array([1.0, -2.0, 0.5])
    state = opt.init(params)
    for _ in range(2):
        updates, state = opt.update(jnp.ones(3), state, params)
        params = optax.apply_updates(params, updates)
    assert not sane or np.all(np.isfinite(np.asarray(params))), f"{kw} gave {params}"


@pytest.mark.parametrize(("name", "arg", "value", "sane"), list(_scheduled_cases()))
def test_scheduled_hyperparameter(name, arg, value, sane):
    factory, valid = SCHEDULED[name]
    _check_scheduled(factory, dict(valid, **{arg: value}), (arg,), sane=sane)


@pytest.mark.parametrize(
    ("options", "names"),
    [
        (dict(static_args=5), ("static_args",)),
        (dict(static_args=None), ("static_args",)),
        (dict(static_args=[1]), ("static_args",)),
        (dict(static_args=["nope"]), ("nope",)),
        (dict(static_args="nesterov"), ("nesterov",)),
        (dict(hyperparam_dtype="bogus"), ("hyperparam_dtype",)),
        (dict(hyperparam_dtype=jnp.int32), ("hyperparam_dtype",)),
        (dict(hyperparam_dtype=1.5), ("hyperparam_dtype",)),
        (dict(hyperparam_dtype=np.zeros(2)), ("hyperparam_dtype",)),
        (dict(hyperparam_dtype=True), ("hyperparam_dtype",)),
        (dict(hyperparam_dtype="float32"), ()),
        (dict(hyperparam_dtype=jnp.bfloat16), ()),
        (dict(beta=0.9), ("beta",)),
    ],
    ids=_label,
)
def test_scheduled_options(options, names):
    _check_scheduled(optax.sgd, dict(learning_rate=0.1, momentum=0.9, **options), names)


@pytest.mark.parametrize("factory", [None, 5, "sgd", int, optax.sgd(0.1)], ids=_label)
def test_scheduled_factory(factory):
    _outcome(lambda: clrjax.scheduled(factory, learning_rate=0.1), ("optimizer_factory",))


# --------------------------------------------------------------------------------------
# Suggestions

_OPTIONS = {
    "valley": [{}, {"fastai_compat": True}, {"fastai_compat": 1}],
    "steep": [{}],
    "minimum": [{}],
    "slide": [
        {},
        {"lr_diff": 1, "thresh": 0.0},
        {"lr_diff": 3, "adjust_value": 0.5},
        {"lr_diff": 0},
        {"lr_diff": 2.0},
        {"thresh": -1.0},
        {"thresh": NAN},
        {"adjust_value": 0},
        {"adjust_value": INF},
        {"adjust_value": "x"},
    ],
    "steepest": [{}, {"foo": 1}],
    "bogus": [{}],
}
_LOSS_SPECIALS = [NAN, INF, -INF, 0.0, 1e308, -1e308, F32_MAX, 5e-324]


def _random_curves(rng):
    """Random ``(lrs, losses)``: mostly valid shapes, NaN/inf and extremes sprinkled."""
    n = int(rng.choice([0, 1, 2, 3, 6, 20, 40]))
    low = 10.0 ** rng.uniform(-300, 0)
    lrs = np.geomspace(low, low * 10.0 ** rng.uniform(1e-12, 300), n) if n else np.array([])
    kind = rng.integers(8)
    if kind == 1 and n > 1:
        lrs = lrs[::-1]  # decreasing
    elif kind == 2 and n > 1:
        lrs = lrs.copy()
        lrs[rng.integers(n)] = rng.choice([NAN, INF, 0.0, -1.0])
    elif kind == 3:
        lrs = lrs[None]  # 2-D
    elif kind == 4 and n > 1:
        lrs = np.repeat(lrs[: n // 2 + 1], 2)[:n]  # repeated
    shape = (int(rng.choice([0, 1, 3])), n) if rng.random() < 0.6 else (n,)
    if rng.random() < 0.05:
        shape = (n + 1,)
    elif rng.random() < 0.05:
        shape = (2, 2, n)
    losses = rng.normal(size=shape) * 10.0 ** rng.uniform(-5, 5)
    mask = rng.random(shape) < rng.choice([0.0, 0.1, 0.5, 1.0])
    losses[mask] = rng.choice(_LOSS_SPECIALS, size=int(mask.sum()))
    return lrs, losses


def _random_suggest_kwargs(rng):
    method = str(rng.choice(list(_OPTIONS)))
    options = _OPTIONS[method]
    kw = dict(options[rng.integers(len(options))])
    if rng.random() < 0.5:
        skips = [None, 0, 1, 3, 100, -1, 1.5, True, np.int64(2)]
        kw["skip_start"] = skips[rng.integers(len(skips))]
    if rng.random() < 0.5:
        kw["skip_end"] = [0, 1, 5, 100, -1, 2.0, None][rng.integers(7)]
    if rng.random() < 0.3:
        kw["non_finite"] = ["stopped", "recorded", "bogus", None][rng.integers(4)]
    return method, kw


def _check_suggestion(value, lrs, method, kw):
    """A suggestion is NaN or a learning rate of the curve (times the method's factor)."""
    if np.isnan(value):
        return
    factor = {"minimum": 0.1, "slide": kw.get("adjust_value", 1.0)}.get(method, 1.0)
    assert np.any(np.isclose(value, lrs * factor, rtol=1e-12, atol=0.0)), (
        f"{method} {kw} suggested {value}, not an lr of the curve (x {factor})"
    )


@pytest.mark.parametrize("seed", range(10))
def test_suggest_random_curves(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        lrs, losses = _random_curves(rng)
        method, kw = _random_suggest_kwargs(rng)
        names = ("lrs", "losses", "method", *kw)
        ok, out = _outcome(functools.partial(clrjax.suggest, lrs, losses, method, **kw), names)
        ok_spread, spread = _outcome(
            functools.partial(clrjax.suggest_spread, lrs, losses, method, **kw), names
        )
        assert ok == ok_spread, (method, kw, np.shape(lrs), np.shape(losses))
        if not ok:
            continue
        if np.ndim(losses) == 1:
            assert isinstance(out, float)
        else:
            assert out.dtype == np.float64 and out.shape == np.shape(losses)[:1]
        values = np.atleast_1d(out)
        for value in values:
            _check_suggestion(value, lrs, method, kw)
        finite = values[np.isfinite(values)]
        assert spread.count == finite.size
        if finite.size:
            assert spread.low <= spread.median <= spread.high, spread
            assert (spread.low, spread.high) == (finite.min(), finite.max())
        else:
            assert np.isnan([spread.median, spread.low, spread.high]).all()


def test_suggest_overflowing_losses_and_spread_order():
    # Regression: differences of huge losses overflowed with a RuntimeWarning
    # (an error under the suite's filters), and the log-space median of equal
    # suggestions landed an ulp above their maximum.
    lrs = np.geomspace(1e-3, 1.0, 30)
    losses = np.where(np.arange(30) % 2 == 0, 1.7e308, -1.7e308)
    for method in clrjax.SUGGESTION_METHODS:
        options = {"lr_diff": 3} if method == "slide" else {}
        value = clrjax.suggest(lrs, losses, method, skip_start=0, skip_end=0, **options)
        assert np.isfinite(value)
    spread = clrjax.suggest_spread(lrs, np.stack([losses, losses]), "minimum")
    assert spread.low <= spread.median <= spread.high


def test_suggest_steep_between_lrs_whose_logs_coincide():
    # Regression: 0/0 slopes (equal losses at two lrs whose logs round to one
    # value) were NaN, which np.argmin picks as the steepest.
    lr = 1e300
    lrs = np.array([lr, np.nextafter(lr, 2 * lr), np.nextafter(np.nextafter(lr, 2 * lr), 2 * lr)])
    lrs = np.append(lrs, 1e301)
    losses = np.array([3.0, 2.0, 2.0, 1.0])
    assert clrjax.suggest(lrs, losses, "steep", skip_start=0, skip_end=0) == lrs[0]


# --------------------------------------------------------------------------------------
# RangeTestResult


def _random_result_kwargs(rng):
    steps, lanes = int(rng.integers(1, 12)), int(rng.integers(1, 5))
    lrs = np.sort(10.0 ** rng.uniform(-7, 1, steps))
    losses = rng.normal(size=(lanes, steps))
    mask = rng.random(losses.shape) < 0.2
    losses[mask] = rng.choice([NAN, INF, -INF], size=int(mask.sum()))
    hparams = {}
    for name in rng.choice(["weight_decay", "momentum", "seed", "b1", "x/y", ""], 3, False):
        kind = rng.integers(3)
        if kind == 0:
            hparams[str(name)] = rng.normal(size=lanes)
        elif kind == 1:
            hparams[str(name)] = rng.integers(0, 5, size=lanes)
        else:
            hparams[str(name)] = rng.random(lanes) < 0.5
    kw = dict(
        lrs=lrs,
        losses=losses,
        smoothed=losses + rng.normal(size=losses.shape) * 0.1,
        diverged_at=rng.integers(-1, steps, size=lanes),
        hparams=hparams,
        grid_names=tuple(n for n in hparams if rng.random() < 0.7),
    )
    if rng.random() < 0.5:
        num_val = int(rng.integers(0, steps + 1))
        kw["val_steps"] = np.sort(rng.choice(steps, size=num_val, replace=False))
        kw["val_losses"] = rng.normal(size=(lanes, num_val))
    if rng.random() < 0.3:
        kw["strategy"] = str(rng.choice(["serial[2]/chunks", "", "é"]))
    return kw


def _valid_result_kwargs():
    return _random_result_kwargs(np.random.default_rng(0)) | dict(
        lrs=np.geomspace(1e-3, 1.0, 6),
        losses=np.ones((2, 6)),
        smoothed=np.ones((2, 6)),
        diverged_at=np.array([-1, 3]),
        hparams={"weight_decay": np.array([0.0, 1e-4])},
        grid_names=("weight_decay",),
        val_steps=np.array([1, 5]),
        val_losses=np.ones((2, 2)),
    )


RESULT_FIELDS = {
    "lrs": [None, "x", [], [[1.0]], [NAN], [1, 2], np.array([1j]), np.array(["a"]), 5.0],
    "losses": [None, "x", [1.0], np.zeros((1, 0)), np.zeros((0, 6)), np.zeros((2, 2, 6))],
    "smoothed": [None, np.zeros((1, 1)), "x", np.zeros((2, 6), dtype=bool)],
    "diverged_at": [None, [0.5, 1], [-2, 0], [100, 0], np.array([True, False]), 3, "x"],
    "hparams": [None, [], {"a": [1]}, {1: [1.0, 2.0]}, {"a": "xy"}, {"a": [None, None]}, "ab"],
    "grid_names": [None, "weight_decay", ["x"], [1], ("a", "a"), 5, ()],
    "val_steps": [None, [0.5], [-1], [10**6], "x", [[0]]],
    "val_losses": [None, "x", [[0.0, 1.0]], np.zeros((3, 3))],
    "strategy": [None, 5, b"x", ["a"]],
}
# Inconsistent fields can be reported under the name of the other one.
RESULT_ALSO = {"lrs": ("losses",), "val_steps": ("val_losses",), "val_losses": ("val_steps",)}


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, v) for f, values in RESULT_FIELDS.items() for v in values],
    ids=[f"{f}-{_label(v)}" for f, values in RESULT_FIELDS.items() for v in values],
)
def test_result_field(field, value):
    kw = _valid_result_kwargs() | {field: value}
    names = (field, *RESULT_ALSO.get(field, ()))
    _outcome(lambda: RangeTestResult(**kw), names)


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("seed", range(4))
def test_result_round_trips(seed, tmp_path):
    """Random valid results survive save/load and pickling; their methods give sane answers."""
    rng = np.random.default_rng(100 + seed)
    for i in range(15):
        result = RangeTestResult(**_random_result_kwargs(rng))
        path = tmp_path / f"r{i % 2}.npz"
        result.save(path)
        for copy in (RangeTestResult.load(path), pickle.loads(pickle.dumps(result))):
            for field in ("lrs", "losses", "smoothed", "diverged_at", "val_steps", "val_losses"):
                assert _same(getattr(result, field), getattr(copy, field)), field
            assert list(copy.hparams) == list(result.hparams)
            assert all(_same(result.hparams[k], copy.hparams[k]) for k in result.hparams)
            assert (copy.grid_names, copy.strategy) == (result.grid_names, result.strategy)
        repr(result)
        for lane in range(result.num_lanes):
            result.lane_label(lane)
        for method in clrjax.SUGGESTION_METHODS:
            values = result.suggest(method, smoothed=bool(rng.random() < 0.5))
            assert values.shape == (result.num_lanes,)
            for value in values:
                _check_suggestion(value, result.lrs, method, {})
        for _, spread in result.suggest_spread("minimum"):
            assert spread.count == 0 or spread.low <= spread.median <= spread.high
        ok, best = _outcome(result.best, ("no lane has a finite smoothed loss",))
        assert not ok or 0 <= best.index < result.num_lanes


def test_result_load_of_bad_files(tmp_path):
    files = {
        "empty.npz": b"",
        "random.npz": np.random.default_rng(0).bytes(300),
        "text.npz": b"lrs,losses\n1,2\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "array.npy", np.zeros(3))
    np.savez(tmp_path / "missing.npz", lrs=np.ones(3))
    np.savez(tmp_path / "pickled.npz", lrs=np.array([{"a": 1}], dtype=object))
    arrays = RangeTestResult(**_valid_result_kwargs()).to_arrays()
    np.savez(tmp_path / "strings.npz", **(arrays | {"losses": np.array([["a"] * 6] * 2)}))
    for path in sorted(tmp_path.iterdir()):
        _outcome(lambda path=path: RangeTestResult.load(path), (str(path), "losses"))
    with pytest.raises(FileNotFoundError):
        RangeTestResult.load(tmp_path / "absent.npz")


def test_result_grid_names_not_iterable():
    # Regression: TypeError "'int' object is not iterable", naming no argument.
    for value in (None, 5):
        with pytest.raises(TypeError, match="grid_names"):
            RangeTestResult(**_valid_result_kwargs() | {"grid_names": value})


# --------------------------------------------------------------------------------------
# Range tests and find_schedule: argument validation


class _Reached(Exception):
    """Raised by the engine stub: the call passed its validation."""


@pytest.fixture
def no_engine(monkeypatch):
    def stub(*args, **kwargs):
        raise _Reached

    monkeypatch.setattr(clrjax._engine, "run", stub)


_X = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
_Y = _X @ np.array([1.0, -2.0, 0.5], np.float32)
_DATA = (_X, _Y)
_VAL = (_X[:8], _Y[:8])


def _loss_fn(w, batch):
    return jnp.mean((batch[0] @ w - batch[1]) ** 2)


_TX = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
_STATE = {"w": jnp.zeros(3), "opt": _TX.init(jnp.zeros(3))}


def _train_step(state, batch, *key):
    loss, grad = jax.value_and_grad(_loss_fn)(state["w"], batch)
    updates, opt = _TX.update(grad, state["opt"], state["w"])
    return {"w": optax.apply_updates(state["w"], updates), "opt": opt}, {"loss": loss}


def _val_step(state, batch):
    return {"loss": _loss_fn(state["w"], batch)}


_COMMON = [None, "x", -1, 0, 1.5, NAN, True, [1], {"a": 1}, object()]
# Arguments every range test (and find_schedule) takes, with their bad values.
RANGE_TEST_ARGS = {
    "batch_size": [*_COMMON, 10**9, 33, np.int64(8)],
    "num_steps": [*_COMMON, 1, 2, 10**12, np.int32(3)],
    "start_lr": [*_COMMON, 1e-40, 1e39, 1.0, 10.0, INF, np.array([1e-3]), F32_TINY],
    "end_lr": [*_COMMON, 1e-7, 1e39, INF, 1e-3, np.array(1.0), F32_MAX],
    "ramp": [*STRINGS, "log", "EXP", "linear"],
    "ramp_convention": [*STRINGS, "keras", "fastai"],
    "grid": [
        *_COMMON,
        {"weight_decay": []},
        {"weight_decay": "x"},
        {"weight_decay": [NAN]},
        {"weight_decay": [1e39]},
        {"weight_decay": [[0.1]]},
        {"weight_decay": [None]},
        {"weight_decay": np.zeros((2, 2))},
        {"weight_decay": 0.1},
        {"learning_rate": [0.1]},
        {"seed": [1]},
        {"nope": [0.1]},
        {1: [0.1]},
        {"momentum": [0.5, 0.9]},
        [("momentum", [0.5])],
    ],
    "seeds": [*_COMMON, [], [-1], [2**32], [0.5], [[1]], ["a"], [0, 0], np.arange(2), [True]],
    "key": [
        *_COMMON,
        2**63,
        -5,
        jax.random.key(0),
        jax.random.PRNGKey(0),
        jnp.zeros(3, jnp.uint32),
        jax.random.split(jax.random.key(0)),
        np.uint32(5),
        jnp.array(3),
    ],
    "shuffle": [*_COMMON, "per_seed", "yes", False],
    "smoothing": [*STRINGS, "EMA", "ema"],
    "beta": [*_COMMON, 1, 1.0, 0.999, "AUTO", np.float32(0.5), np.array([0.5])],
    "diverge_threshold": [*_COMMON, 1.0, 1e39, INF, 1.5],
    "diverge_rebound": [*_COMMON, INF, np.array([0.5])],
    "rebound_min_drop": [*_COMMON, 1.0, 0.0, np.array([0.5])],
    "val_data": [
        *_COMMON,
        (_X[:4, :2], _Y[:4]),
        (_X[:0], _Y[:0]),
        [],
        [(_X[:4], _Y[:4]), (_X[:5], _Y[:5])],
        (_X[:4], _Y[:5]),
        _X[:4],
        (_X[:4].astype(np.int32), _Y[:4]),
        [(_X[:4], _Y[:4])],
    ],
    "val_every": [*_COMMON, 10**9],
    "val_batch_size": [*_COMMON, 10**9, 5],
    "strategy": [*STRINGS, "pmap", "serial"],
    "lane_group_size": [*_COMMON, 10**9],
    "shard_lanes": [*_COMMON, np.bool_(True)],
    "driver": [*STRINGS, "loop", "python"],
    "chunk_size": [*_COMMON, 10**9],
    "progress": [*_COMMON, "yes", np.bool_(False)],
    "max_memory": [*_COMMON, 1, INF, 1e100, [1e9]],
}
# Arguments of one entry point only.
RANGE_TEST_ONLY = {
    "range_test": {
        "optimizer": [*_COMMON, optax.sgd(0.1), optax.sgd, _TX, lambda: None],
        "init_fn": [*_COMMON, lambda k: "x", lambda k: jnp.zeros(3, jnp.int32)],
        "accumulation_steps": [*_COMMON, 10**9],
        "compute_dtype": [*_COMMON, jnp.int32, "float16", "bogus", jnp.bfloat16],
        "val_loss_fn": _COMMON,
        "has_aux": _COMMON,
        "takes_rng": _COMMON,
        "state": ["x", {"a": object()}, [1.0, "b"]],
    },
    "range_test_step": {
        "init_fn": [*_COMMON, lambda k: "x"],
        "loss_key": _COMMON,
        "val_step": _COMMON,
        "takes_rng": _COMMON,
    },
}
# Both take data, and params or a train state, as positional arguments.
POSITIONAL = {
    "data": [
        *_COMMON,
        (_X, _Y[:10]),
        (_X[0, 0], _Y[0]),
        (),
        {},
        "abcd",
        (_X, "y"),
        [_X, _Y[:, None]],
        np.zeros((32, 3, 0)),
    ],
    "params": [*_COMMON, jnp.zeros(3, jnp.int32), {"a": jnp.zeros(2), "b": 1}, _TX.init(_X[0])],
    "loss_fn": _COMMON,
}
# A refusal may name the argument the bad value clashes with.
RANGE_TEST_ALSO = {
    "grid": ("train_state", "optimizer"),
    "seeds": ("shuffle",),
    "batch_size": ("data",),
    "params": ("train_state",),
    "loss_fn": ("train_step",),
}


def _range_test_call(entry, **changes):
    """``(function, args, kwargs)`` of a valid call of ``entry`` with ``changes`` made.

    For ``range_test_step`` the positional ``loss_fn`` and ``params`` are the
    train step and the train state.
    """
    kw = dict(batch_size=8, num_steps=4, start_lr=1e-3, end_lr=1.0, progress=False)
    if entry == "range_test":
        fn, args = clrjax.range_test, {"loss_fn": _loss_fn, "params": jnp.zeros(3), "data": _DATA}
    else:
        fn, args = clrjax.range_test_step, {"loss_fn": _train_step, "params": _STATE, "data": _DATA}
        if "val_data" in changes:
            kw["val_step"] = _val_step
    if "seeds" in changes:
        kw["shuffle"] = "per_seed"  # seeds that change nothing would warn
    for arg, value in changes.items():
        (args if arg in args else kw)[arg] = value
    return fn, tuple(args.values()), kw


def _range_test_cases():
    for entry in ("range_test", "range_test_step"):
        tables = {**RANGE_TEST_ARGS, **RANGE_TEST_ONLY[entry], **POSITIONAL}
        for arg, values in tables.items():
            for value in values:
                yield pytest.param(entry, arg, value, id=f"{entry}-{arg}-{_label(value)}")


@pytest.mark.parametrize(("entry", "arg", "value"), list(_range_test_cases()))
def test_range_test_argument(no_engine, entry, arg, value):
    fn, args, kw = _range_test_call(entry, **{arg: value})
    names = (arg, *RANGE_TEST_ALSO.get(arg, ()))
    with contextlib.suppress(_Reached):
        _outcome(lambda: _folded(fn, *args, **kw), _named(fn, names), memory=True)


@pytest.mark.parametrize("entry", ["range_test", "range_test_step"])
def test_range_test_random_combinations(no_engine, entry):
    rng = np.random.default_rng(["range_test", "range_test_step"].index(entry))
    tables = {**RANGE_TEST_ARGS, **RANGE_TEST_ONLY[entry]}
    tables.pop("seeds")  # seeds without per-seed shuffling would warn
    tables.pop("shuffle")
    for _ in range(60):
        args = rng.choice(list(tables), size=3, replace=False)
        changes = {arg: tables[arg][rng.integers(len(tables[arg]))] for arg in args}
        fn, pos, kw = _range_test_call(entry, **changes)
        names = tuple(a for arg in args for a in (arg, *RANGE_TEST_ALSO.get(arg, ())))
        with contextlib.suppress(_Reached):
            _outcome(functools.partial(_folded, fn, *pos, **kw), _named(fn, names), memory=True)


FIND_SCHEDULE_ARGS = {
    "val_data": RANGE_TEST_ARGS["val_data"],
    "total_steps": [*_COMMON, 1, 2],
    "batch_size": [*_COMMON, 33],
    "grid": [*_COMMON, {"momentum": [0.9]}, {"weight_decay": [1e39]}, {"b1": [0.9]}],
    "kinds": [*_COMMON, [], ["decay", "bogus"], "decay", ("one_cycle",)],
    "steps_per_epoch": [*_COMMON, 10**9],
    "decay_rate": [*_COMMON, 1.0, 1.5, 1e-40, [0.5]],
    "init_fn": [*_COMMON, lambda k: "x"],
    "key": [*_COMMON, 2**64],
    "range_test_steps": _COMMON,
    "start_lr": [*_COMMON, 1e-40],
    "end_lr": _COMMON,
    "val_batch_size": [*_COMMON, 100],
    "takes_rng": _COMMON,
    "strategy": STRINGS,
    "shard_lanes": _COMMON,
    "max_memory": [*_COMMON, [1e9]],
    "progress": _COMMON,
}
FIND_SCHEDULE_ONLY = {
    "find_schedule": {
        "optimizer": [*_COMMON, optax.sgd(0.1), lambda: None, optax.adam],
        "val_metric": _COMMON,
        "has_aux": _COMMON,
        "state": ["x"],
    },
    "find_schedule_step": {"val_step": _COMMON, "metric_key": [*_COMMON, 5], "loss_key": _COMMON},
}


def _find_schedule_cases():
    for entry, only in FIND_SCHEDULE_ONLY.items():
        for arg, values in {**FIND_SCHEDULE_ARGS, **only}.items():
            for value in values:
                yield pytest.param(entry, arg, value, id=f"{entry}-{arg}-{_label(value)}")


@pytest.mark.parametrize(("entry", "arg", "value"), list(_find_schedule_cases()))
def test_find_schedule_argument(no_engine, entry, arg, value):
    kw = dict(
        val_data=_VAL,
        total_steps=9,
        batch_size=8,
        range_test_steps=7,
        start_lr=1e-3,
        progress=False,
    )
    if entry == "find_schedule":
        fn, args = clrjax.find_schedule, (_loss_fn, jnp.zeros(3), _DATA)
    else:
        fn, args = clrjax.find_schedule_step, (_train_step, _STATE, _DATA)
        kw["val_step"] = _val_step
    kw[arg] = value
    names = (arg, *RANGE_TEST_ALSO.get(arg, ()))
    with contextlib.suppress(_Reached):
        _outcome(lambda: _folded(fn, *args, **kw), _named(fn, names), memory=True)


def test_validation_regressions(no_engine):
    # Regression: each of these failed with a message naming no argument (or a
    # ZeroDivisionError), or was accepted and failed later inside JAX.
    run = functools.partial(
        _folded, clrjax.range_test, _loss_fn, jnp.zeros(3), _DATA, batch_size=8, num_steps=4
    )
    find = functools.partial(
        _folded, clrjax.find_schedule, _loss_fn, jnp.zeros(3), _DATA, val_data=_VAL, total_steps=9
    )
    checks = [
        (lambda: find(progress="yes"), TypeError, "progress"),
        (lambda: find(val_batch_size=0), ValueError, "val_batch_size"),
        (lambda: find(decay_rate=[0.5]), TypeError, "decay_rate"),
        (lambda: run(val_data=_VAL, val_batch_size=0), ValueError, "Validation.batch_size"),
        (lambda: run(val_data=_VAL, val_loss_fn="x"), TypeError, "Validation.loss_fn"),
        (lambda: run(beta=[0.5]), TypeError, "beta"),
        (lambda: run(max_memory=[1e9]), TypeError, "max_memory"),
        (lambda: run(has_aux="x"), TypeError, "has_aux"),
        (lambda: run(progress="yes"), TypeError, "progress"),
        (lambda: run(state={"a": "x"}), TypeError, r"state\['a'\]"),
        (lambda: run(grid={"weight_decay": [1e39]}), ValueError, "weight_decay"),
        (
            lambda: _folded(clrjax.range_test, _loss_fn, None, _DATA, init_fn=lambda key: "x"),
            TypeError,
            "init_fn",
        ),
        (lambda: clrjax.range_test(_loss_fn, "x", _DATA), TypeError, "params"),
        (lambda: run(accumulation_steps=10**9), MemoryError, "accumulation_steps"),
        (
            lambda: find(range_test_steps=1),
            ValueError,
            "range_test_steps",
        ),
        (
            lambda: _folded(
                clrjax.find_schedule_step,
                _train_step,
                None,
                _DATA,
                val_data=_VAL,
                val_step=_val_step,
                total_steps=9,
                init_fn="x",
            ),
            TypeError,
            "init_fn",
        ),
        (
            lambda: clrjax.find_schedule(
                _loss_fn, jnp.zeros(3), _DATA, val_data=_VAL, total_steps=9, kinds=None
            ),
            TypeError,
            "kinds",
        ),
    ]
    for call, error, match in checks:
        with pytest.raises(error, match=match):
            call()


# --------------------------------------------------------------------------------------
# Range tests: a few tiny runs of accepted edge cases


def _check_run(result, num_lanes, num_steps):
    assert isinstance(result, RangeTestResult)
    assert result.losses.shape == result.smoothed.shape == (num_lanes, num_steps)
    for lane in range(num_lanes):
        end = result.diverged_at[lane]
        ran = result.losses[lane, : (num_steps if end < 0 else end)]
        assert np.all(np.isfinite(ran)), result.losses[lane]
        for method in clrjax.SUGGESTION_METHODS:
            for value in result.suggest(method):
                _check_suggestion(value, result.lrs, method, {})


def test_range_test_tiny_runs():
    """Two runs of accepted edge cases (each compiles, so only two)."""
    result = _folded(
        clrjax.range_test,
        _loss_fn,
        jnp.zeros(3),
        _DATA,
        batch_size=32,  # every example at each step
        num_steps=2,
        start_lr=F32_TINY,
        end_lr=F32_MAX,  # the whole float32 range: the second step diverges
        ramp="linear",
        beta=0.0,
        diverge_threshold=None,
        diverge_rebound=None,
        progress=False,
    )
    _check_run(result, 1, 2)
    assert result.diverged_at[0] in (-1, 1)
    result = _folded(
        clrjax.range_test_step,
        _train_step,
        None,
        [(_X[i : i + 8], _Y[i : i + 8]) for i in range(0, 32, 8)],  # a list of batches
        num_steps=4,
        start_lr=1e-4,
        end_lr=10.0,
        grid={"momentum": [0.0, 0.99]},
        seeds=[0, 1],
        init_fn=lambda key: {"w": jax.random.normal(key, (3,)), "opt": _STATE["opt"]},
        takes_rng=True,
        val_data=[_VAL, _VAL],
        val_step=_val_step,
        val_every=2,
        ramp_convention="fastai",
        smoothing="ema",
        strategy="serial",
        lane_group_size=3,
        driver="chunks",
        chunk_size=2,
        max_memory=1e12,
        progress=False,
    )
    _check_run(result, 4, 4)
    assert result.val_losses.shape == (4, 2)


# --------------------------------------------------------------------------------------
# Plotting


@pytest.fixture
def close_figures():
    plt.close("all")
    yield
    plt.close("all")


def _plot_result(lanes=2, nan_fraction=0.1, validation=True):
    rng = np.random.default_rng(lanes)
    losses = rng.normal(size=(lanes, 20)) + 3.0
    losses[rng.random(losses.shape) < nan_fraction] = NAN
    hparams = {
        "weight_decay": np.repeat([0.0, 1e-4], lanes // 2),
        "momentum": np.tile([0.9, 0.95], lanes // 2),
        "seed": np.arange(lanes),
    }
    kw = dict(
        lrs=np.geomspace(1e-4, 1.0, 20),
        losses=losses,
        smoothed=losses,
        diverged_at=rng.integers(-1, 20, lanes),
        hparams=hparams,
        grid_names=tuple(hparams),
    )
    if validation:
        kw.update(val_steps=np.arange(0, 20, 5), val_losses=rng.normal(size=(lanes, 4)))
    return RangeTestResult(**kw)


PLOT_ARGS = {
    "lanes": [[], [10], [-10], [0.5], "x", np.array([True]), [[0]], -1, np.zeros(2, bool)],
    "suggest": ["bogus", ["valley", "bogus"], 5, [np.zeros(2)], ("steep", "slide")],
    "skip_start": [-1, 1.5, "x", None, 20, True],
    "skip_end": [-1, 19, 2.0],
    "label_by": ["bogus", ["seed", "bogus"], 5, [["seed"]], ("momentum", "momentum")],
    "ylim": ["x", (1,), (1, 2, 3), (2, 1), (NAN, 1), (0, 0), 5, (-INF, INF), ((1, 2), 3)],
    "cmap": ["nope", 5, "magma"],
    "legend": ["x", 5, None, "outside"],
}


@pytest.mark.parametrize(
    ("arg", "value"),
    [(a, v) for a, values in PLOT_ARGS.items() for v in values],
    ids=[f"{a}-{_label(v)}" for a, values in PLOT_ARGS.items() for v in values],
)
def test_plot_range_test_argument(close_figures, arg, value):
    result = _plot_result()
    for plot in (plotting.plot_range_test, plotting.plot_range_test_grid):
        ok, _ = _outcome(lambda plot=plot: plot(result, **{arg: value}), (arg,))
        assert ok or not plt.get_fignums(), "a refused call left a figure open"
        if ok:  # test_plot_odd_results draws grids
            break


@pytest.mark.parametrize(
    ("kw", "names"),
    [
        (dict(row="bogus"), ("row",)),
        (dict(row=5, col=None), ("row",)),
        (dict(col=["momentum"]), ("col",)),
        (dict(row=None, col="seed", suggest=None), ()),
        (dict(figsize=(1,)), ("figsize",)),
        (dict(ax=None), ("ax",)),
        (dict(nope=1), ("nope",)),
    ],
    ids=_label,
)
def test_plot_range_test_grid_argument(close_figures, kw, names):
    _outcome(lambda: plotting.plot_range_test_grid(_plot_result(), **kw), names)


@pytest.mark.parametrize("nan_fraction", [0.0, 0.6, 1.0])
def test_plot_odd_results(close_figures, nan_fraction):
    result = _plot_result(4, nan_fraction, validation=nan_fraction < 1)
    plotting.plot_range_test(result)
    if nan_fraction == 0.6:
        plotting.plot_range_test_grid(result, row=None, col="momentum", suggest=None)
    one = RangeTestResult(
        lrs=np.array([-1.0]),
        losses=np.full((1, 1), nan_fraction),
        smoothed=np.full((1, 1), F32_MAX),
        diverged_at=np.array([0]),
        hparams={},
        grid_names=(),
    )
    _outcome(lambda: plotting.plot_range_test(one, log_lr=False), ("lrs",))


@pytest.mark.parametrize(
    ("kw", "names"),
    [
        (dict(num_steps=0), ("num_steps",)),
        (dict(num_steps=2.0), ("num_steps",)),
        (dict(num_steps=True), ("num_steps",)),
        (dict(schedule=None), ("schedule",)),
        (dict(momentum="x"), ("momentum",)),
        (dict(schedule=lambda t: jnp.zeros(3)), ("schedule",)),
        (dict(schedule=lambda t: "x"), ("schedule",)),
        (dict(momentum=lambda t: jnp.zeros((2, 2))), ("momentum",)),
        (
            dict(
                schedule=clrjax.one_cycle_schedule(10, 1.0),
                momentum=clrjax.one_cycle_momentum_schedule(10),
                log_lr=True,
            ),
            (),
        ),
    ],
    ids=_label,
)
def test_plot_schedule_argument(close_figures, kw, names):
    kw = dict(schedule=lambda t: 0.1 * 0.9**t, num_steps=10) | kw
    ok, _ = _outcome(lambda: plotting.plot_schedule(**kw), names)
    assert ok or not plt.get_fignums(), "a refused call left a figure open"
