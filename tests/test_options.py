"""Tests for the option objects (Execution, Curve, Model, Validation, Search), moved keywords."""

import dataclasses
import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax
from clrjax import _find_schedule, _range_test
from clrjax._options import engine_request, engine_tracking, ramp_beta

ENTRY_POINTS = [
    clrjax.range_test,
    clrjax.range_test_step,
    clrjax.find_schedule,
    clrjax.find_schedule_step,
]
OPTIONS = [clrjax.Execution, clrjax.Curve, clrjax.Model, clrjax.Validation, clrjax.Search]
# The keywords each entry point took before the option objects (clrjax 0.1.0).
OLD_KEYWORDS = {
    "range_test": """batch_size num_steps start_lr end_lr ramp ramp_convention optimizer grid
        seeds init_fn key has_aux takes_rng state accumulation_steps shuffle compute_dtype
        smoothing beta diverge_threshold diverge_rebound rebound_min_drop val_data val_every
        val_batch_size val_loss_fn strategy lane_group_size shard_lanes driver chunk_size
        progress max_memory mesh""",
    "range_test_step": """batch_size num_steps start_lr end_lr ramp ramp_convention grid seeds
        init_fn key takes_rng loss_key shuffle smoothing beta diverge_threshold diverge_rebound
        rebound_min_drop val_data val_every val_batch_size val_step strategy lane_group_size
        shard_lanes driver chunk_size progress max_memory mesh""",
    "find_schedule": """val_data total_steps batch_size optimizer grid val_metric kinds
        steps_per_epoch decay_rate init_fn key range_test_steps start_lr end_lr val_batch_size
        has_aux takes_rng state strategy shard_lanes max_memory progress mesh""",
    "find_schedule_step": """val_data val_step total_steps batch_size grid metric_key loss_key
        kinds steps_per_epoch decay_rate init_fn key range_test_steps start_lr end_lr
        val_batch_size takes_rng strategy shard_lanes max_memory progress mesh""",
}

BAD_FIELDS = [
    (clrjax.Execution, "strategy", "fastest", ValueError),
    (clrjax.Execution, "lane_group_size", 0, ValueError),
    (clrjax.Execution, "lane_group_size", 2.0, TypeError),
    (clrjax.Execution, "shard_lanes", "yes", TypeError),
    (clrjax.Execution, "driver", "loop", ValueError),
    (clrjax.Execution, "chunk_size", 0, ValueError),
    (clrjax.Execution, "max_memory", -1.0, ValueError),
    (clrjax.Execution, "max_memory", [1e9], TypeError),
    (clrjax.Execution, "mesh", "lanes", TypeError),
    (clrjax.Execution, "progress", "yes", TypeError),
    (clrjax.Curve, "ramp", "log", ValueError),
    (clrjax.Curve, "ramp_convention", "keras", ValueError),
    (clrjax.Curve, "smoothing", "EMA", ValueError),
    (clrjax.Curve, "beta", 1.0, ValueError),
    (clrjax.Curve, "beta", "AUTO", TypeError),
    (clrjax.Curve, "beta", [0.5], TypeError),
    (clrjax.Curve, "diverge_threshold", 1.0, ValueError),
    (clrjax.Curve, "diverge_threshold", "4", TypeError),
    (clrjax.Curve, "diverge_rebound", 0.0, ValueError),
    (clrjax.Curve, "rebound_min_drop", 1.0, ValueError),
    (clrjax.Model, "init_fn", "init", TypeError),
    (clrjax.Model, "state", {"a": "x"}, TypeError),
    (clrjax.Model, "has_aux", 1, TypeError),
    (clrjax.Model, "takes_rng", "yes", TypeError),
    (clrjax.Model, "accumulation_steps", 0, ValueError),
    (clrjax.Model, "accumulation_steps", 2.0, TypeError),
    (clrjax.Model, "compute_dtype", jnp.int32, ValueError),
    (clrjax.Model, "compute_dtype", "bogus", TypeError),
    (clrjax.Validation, "data", None, ValueError),
    (clrjax.Validation, "every", 0, ValueError),
    (clrjax.Validation, "batch_size", 0, ValueError),
    (clrjax.Validation, "loss_fn", "mse", TypeError),
    (clrjax.Validation, "step", "eval_step", TypeError),
    (clrjax.Search, "range_test_steps", 1, ValueError),
    (clrjax.Search, "start_lr", 0.0, ValueError),
    (clrjax.Search, "end_lr", 1e-6, ValueError),
    (clrjax.Search, "steps_per_epoch", 0, ValueError),
    (clrjax.Search, "decay_rate", 0.0, ValueError),
    (clrjax.Search, "decay_rate", [0.5], TypeError),
    (clrjax.Search, "val_batch_size", 0, ValueError),
    (clrjax.Search, "max_extensions", -1, ValueError),
    (clrjax.Search, "max_extensions", 1.0, TypeError),
    (clrjax.Search, "metric_mode", "maximize", ValueError),
]
VALID = {clrjax.Validation: {"data": (np.zeros((4, 3)), np.zeros(4))}}


@pytest.mark.parametrize(
    ("cls", "field", "value", "error"),
    BAD_FIELDS,
    ids=[f"{c.__name__}.{f}={v!r}" for c, f, v, _ in BAD_FIELDS],
)
def test_a_bad_field_is_refused_naming_it(cls, field, value, error):
    # start_lr and end_lr share the range test's check, which names them without the class
    name = field if field in ("start_lr", "end_lr") else f"{cls.__name__}.{field}"
    with pytest.raises(error, match=re.escape(name)):
        cls(**{**VALID.get(cls, {}), field: value})


def test_every_field_has_a_bad_value_tested():
    tested = {(cls, field) for cls, field, _, _ in BAD_FIELDS}
    for cls in OPTIONS:
        for field in dataclasses.fields(cls):
            assert (cls, field.name) in tested, f"{cls.__name__}.{field.name}"


@pytest.mark.parametrize("cls", OPTIONS, ids=lambda c: c.__name__)
def test_options_are_frozen_documented_and_have_a_repr(cls):
    option = cls(**VALID.get(cls, {}))
    field = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(option, field, None)
    assert repr(option).startswith(f"{cls.__name__}(")
    for f in dataclasses.fields(cls):
        assert f"  {f.name}: " in cls.__doc__, f"{cls.__name__}.{f.name} is not documented"
    assert ">>> " in cls.__doc__
    assert getattr(clrjax, cls.__name__) is cls and cls.__name__ in clrjax.__all__


@pytest.mark.parametrize("cls", [clrjax.Execution, clrjax.Curve, clrjax.Search])
def test_options_of_plain_values_compare_and_hash_by_value(cls):
    assert cls() == cls() and hash(cls()) == hash(cls())
    other = {
        clrjax.Execution: {"strategy": "serial"},
        clrjax.Curve: {"beta": 0.9},
        clrjax.Search: {"range_test_steps": 50},
    }[cls]
    assert cls(**other) != cls() and len({cls(), cls(), cls(**other)}) == 2


@pytest.mark.parametrize("cls", [clrjax.Model, clrjax.Validation])
def test_options_holding_arrays_hash_by_identity(cls):
    a, b = cls(**VALID.get(cls, {})), cls(**VALID.get(cls, {}))
    assert a == a and a != b and len({a, b, a}) == 2


def test_model_stores_the_compute_dtype_as_a_dtype():
    assert clrjax.Model(compute_dtype="bfloat16").compute_dtype == np.dtype(jnp.bfloat16)
    assert clrjax.Model().compute_dtype is None


def test_execution_builds_the_engines_request():
    mesh = jax.make_mesh((1, 1), ("lanes", "data"))
    execution = clrjax.Execution(
        strategy="map", lane_group_size=3, shard_lanes=True, driver="chunks", chunk_size=7,
        max_memory=2e9, mesh=mesh, progress=True,
    )  # fmt: skip
    request = engine_request(execution, progress=False)
    assert (request.strategy, request.group, request.driver, request.chunk_size) == (
        "map",
        3,
        "chunks",
        7,
    )
    assert (request.shard, request.mesh, request.max_memory, request.progress) == (
        True,
        mesh,
        2e9,
        False,
    )
    assert engine_request(execution, progress=True, chunk_size=2).chunk_size == 2
    assert engine_request(execution, progress=True).label == "lanes"
    assert engine_request(execution, progress=True, label="range test").label == "range test"


def test_execution_refuses_shard_lanes_false_with_a_mesh():
    mesh = jax.make_mesh((1, 1), ("lanes", "data"))
    with pytest.raises(
        ValueError, match=r"Execution\.shard_lanes=False contradicts Execution\.mesh"
    ):
        clrjax.Execution(shard_lanes=False, mesh=mesh)


def test_curve_builds_the_engines_tracking():
    auto = engine_tracking(clrjax.Curve(), 100, 1e-7, 10.0)
    assert auto.beta == ramp_beta(100, 1e-7, 10.0) and auto.start_steps == 10
    assert (auto.threshold, auto.rebound, auto.rebound_drop) == (4.0, 0.5, 0.2)
    off = clrjax.Curve(beta=0.5, diverge_threshold=None, diverge_rebound=None)
    tracking = engine_tracking(off, 1000, 1e-3, 1.0)
    assert (tracking.beta, tracking.threshold, tracking.rebound) == (0.5, math.inf, math.inf)
    assert tracking.start_steps == 100  # a tenth of the steps


# ------------------------------------------------------------------ the entry points


MOVED = [(fn, keyword) for fn in ENTRY_POINTS for keyword in fn.moved_keywords]


@pytest.mark.parametrize(
    ("fn", "keyword"), MOVED, ids=[f"{fn.__name__}-{keyword}" for fn, keyword in MOVED]
)
def test_a_moved_keyword_names_its_new_home(fn, keyword):
    option, field = fn.moved_keywords[keyword]
    cls = getattr(clrjax, option.capitalize())
    assert field in {f.name for f in dataclasses.fields(cls)}
    assert option in inspect.signature(fn).parameters
    assert keyword not in inspect.signature(fn).parameters
    message = (
        f"{fn.__name__}() got the keyword {keyword}, which moved: "
        f"pass {option}=clrjax.{cls.__name__}({field}=...)"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        fn(None, None, None, **{keyword: None})


@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda fn: fn.__name__)
def test_every_removed_keyword_is_in_the_table(fn):
    now = set(inspect.signature(fn).parameters)
    assert set(OLD_KEYWORDS[fn.__name__].split()) - now == set(fn.moved_keywords)


@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda fn: fn.__name__)
def test_an_entry_point_takes_at_most_16_parameters(fn):
    assert len(inspect.signature(fn).parameters) <= 16
    assert fn.__doc__ and fn.__wrapped__.__doc__ == fn.__doc__


@pytest.mark.parametrize(
    ("argument", "value"), [("execution", "serial"), ("curve", {}), ("model", clrjax.Curve())]
)
def test_an_option_of_the_wrong_type_is_refused(argument, value):
    with pytest.raises(TypeError, match=f"{argument} must be a clrjax"):
        clrjax.range_test(lambda w, b: 0.0, jnp.zeros(3), None, **{argument: value})


def _train_step(state, batch):
    return state, 0.0


@pytest.mark.parametrize(
    ("fn", "model", "field"),
    [
        (clrjax.range_test_step, clrjax.Model(state=jnp.zeros(2)), "state"),
        (clrjax.range_test_step, clrjax.Model(has_aux=True), "has_aux"),
        (clrjax.range_test_step, clrjax.Model(accumulation_steps=2), "accumulation_steps"),
        (clrjax.range_test_step, clrjax.Model(compute_dtype=jnp.bfloat16), "compute_dtype"),
        (clrjax.find_schedule_step, clrjax.Model(state=jnp.zeros(2)), "state"),
        (clrjax.find_schedule_step, clrjax.Model(has_aux=True), "has_aux"),
        (clrjax.find_schedule_step, clrjax.Model(accumulation_steps=2), "accumulation_steps"),
        (clrjax.find_schedule_step, clrjax.Model(compute_dtype=jnp.bfloat16), "compute_dtype"),
        (clrjax.find_schedule, clrjax.Model(accumulation_steps=2), "accumulation_steps"),
    ],
)
def test_a_model_field_that_does_not_apply_is_refused(fn, model, field):
    first = _train_step if fn.__name__.endswith("_step") else (lambda w, b: 0.0)
    extra = {"val_step": _train_step} if fn is clrjax.find_schedule_step else {}
    if fn.__name__.startswith("find"):
        extra.update(val_data=(np.zeros((8, 3)), np.zeros(8)), total_steps=9)
    message = f"Model.{field} does not apply to {fn.__name__}"
    with pytest.raises(ValueError, match=re.escape(message)):
        fn(first, jnp.zeros(3), (np.zeros((8, 3)), np.zeros(8)), model=model, **extra)


def test_a_validation_field_of_the_other_range_test_is_refused():
    data = (np.zeros((8, 3)), np.zeros(8))
    with pytest.raises(ValueError, match=r"Validation\.step does not apply to range_test"):
        clrjax.range_test(
            lambda w, b: 0.0, jnp.zeros(3), data, validation=clrjax.Validation(data, step=print)
        )
    with pytest.raises(ValueError, match=r"Validation\.loss_fn does not apply to range_test_step"):
        clrjax.range_test_step(
            _train_step, {}, data, validation=clrjax.Validation(data, loss_fn=print)
        )


# ------------------------------------------------------------------ forwarded whole

X = np.asarray(jax.random.normal(jax.random.key(0), (96, 3)), np.float32)
Y = X @ np.array([1.0, -2.0, 0.5], np.float32)


def mse(w, batch):
    return jnp.mean((batch[0] @ w - batch[1]) ** 2)


class _Stop(Exception):
    pass


def _spy(monkeypatch, module):
    """Replaces ``module.run_range_test`` by a spy that records its call and stops."""
    calls = []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        raise _Stop

    monkeypatch.setattr(module, "run_range_test", spy)
    return calls


def _never_again(monkeypatch):
    """From now on, validating an option object fails."""

    def revalidated(self):
        raise AssertionError(f"{type(self).__name__} validated again")

    for cls in OPTIONS:
        monkeypatch.setattr(cls, "__post_init__", revalidated)


def test_find_schedule_passes_its_options_whole_to_its_range_test(monkeypatch):
    calls = _spy(monkeypatch, _find_schedule)
    model = clrjax.Model(init_fn=lambda key: jnp.zeros(3), compute_dtype=jnp.bfloat16)
    execution = clrjax.Execution(strategy="serial", lane_group_size=2, max_memory=1e9)
    search = clrjax.Search(range_test_steps=20, start_lr=1e-4, end_lr=1.0)
    _never_again(monkeypatch)
    with pytest.raises(_Stop):
        clrjax.find_schedule(
            mse,
            None,
            (X[:64], Y[:64]),
            val_data=(X[64:], Y[64:]),
            total_steps=27,
            batch_size=16,
            model=model,
            search=search,
            execution=execution,
        )
    ((task, start, _), kw) = calls[0]
    assert kw["execution"] is execution and kw["progress"] is False
    assert (kw["num_steps"], kw["start_lr"], kw["end_lr"]) == (20, 1e-4, 1.0)
    assert task.init_fn is model.init_fn and task.compute_dtype == np.dtype(jnp.bfloat16)
    assert start == (None, None) and task.val_metric is None


def test_range_test_passes_its_options_whole(monkeypatch):
    calls = _spy(monkeypatch, _range_test)
    model = clrjax.Model(state={"count": jnp.zeros(())}, accumulation_steps=2)
    curve, execution = clrjax.Curve(beta=0.9), clrjax.Execution(driver="scan")
    validation = clrjax.Validation((X, Y), every=5)
    _never_again(monkeypatch)
    with pytest.raises(_Stop):
        clrjax.range_test(
            lambda w, s, b: (mse(w, b), s),
            jnp.zeros(3),
            (X, Y),
            model=model,
            curve=curve,
            validation=validation,
            execution=execution,
        )
    ((task, start, _), kw) = calls[0]
    assert kw["curve"] is curve and kw["execution"] is execution
    assert kw["validation"] is validation and kw["accumulation_steps"] == 2
    assert start[1] is model.state and task.stateful and task.accumulation_steps == 2


@pytest.mark.parametrize("compute_dtype", [None, jnp.bfloat16])
@pytest.mark.filterwarnings("ignore:find_schedule. the winner")  # an edge winner is fine here
def test_find_schedule_computes_in_the_models_compute_dtype(compute_dtype):
    seen = set()

    def loss_fn(w, batch):
        seen.add(w.dtype)  # at trace time: the range test's and the race's programs
        return mse(w, batch).astype(jnp.float32)

    choice = clrjax.find_schedule(
        loss_fn,
        jnp.zeros(3),
        (X[:64], Y[:64]),
        val_data=(X[64:], Y[64:]),
        total_steps=18,
        batch_size=16,
        optimizer=optax.sgd,
        kinds=("decay",),
        model=clrjax.Model(compute_dtype=compute_dtype),
        search=clrjax.Search(range_test_steps=12, start_lr=1e-3, end_lr=1.0),
        execution=clrjax.Execution(progress=False),
    )
    assert seen == {np.dtype(jnp.float32 if compute_dtype is None else compute_dtype)}
    assert np.isfinite(choice.learning_rate)
