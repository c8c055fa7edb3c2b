"""Tests for clrjax.find_schedule and its result, clrjax.ScheduleChoice."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _flat_options import fold

import clrjax
from clrjax import _candidates, _find_schedule, _race, _training

RNG = np.random.default_rng(0)
CENTRES = RNG.normal(size=(3, 8)) * 1.5


def sample(n):
    y = RNG.integers(0, 3, size=n).astype(np.int32)
    return (CENTRES[y] + RNG.normal(size=(n, 8))).astype(np.float32), y


TRAIN, VAL = sample(256), sample(128)


def init_fn(key):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (8, 16)) * 0.3, "w2": jax.random.normal(k2, (16, 3)) * 0.3}


def logits(params, x):
    return jnp.tanh(x @ params["w1"]) @ params["w2"]


def loss_fn(params, batch):
    x, y = batch
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits(params, x)), y[:, None], 1))


def accuracy(params, batch):
    x, y = batch
    return jnp.mean(jnp.argmax(logits(params, x), axis=1) == y)


SEARCH = clrjax.Search(range_test_steps=40, start_lr=1e-4)
FAST = dict(total_steps=72, batch_size=32, model=clrjax.Model(init_fn=init_fn), search=SEARCH)


@pytest.fixture(scope="module")
def choice():
    return clrjax.find_schedule(
        loss_fn,
        None,
        TRAIN,
        val_data=VAL,
        val_metric=accuracy,
        grid={"weight_decay": [0, 1e-3]},
        **FAST,
    )


def test_the_race_and_its_winner(choice):
    assert isinstance(choice, clrjax.ScheduleChoice)
    assert [r.num_steps for r in choice.rungs] == [8, 24, 72]
    sizes = [len(r.candidates) for r in choice.rungs]
    assert sizes[0] == len(choice.candidates) and sizes[0] > sizes[1] > sizes[2] >= 1
    assert {c.kind for c in choice.candidates} == {"one_cycle", "decay"}
    assert {c.hparams["weight_decay"] for c in choice.candidates} == {0.0, 1e-3}
    assert choice.rungs[-1].scores.shape[1] == 2  # the final rung runs two seeds
    best = choice.candidates[choice.winner]
    assert (choice.kind, choice.learning_rate, choice.hparams) == (
        best.kind,
        best.peak,
        best.hparams,
    )
    assert choice.rungs[-1].mean_scores.max() > 0.8  # accuracy on an easy problem
    table = choice.candidate_scores()
    assert table.shape == (len(choice.candidates), 3)
    assert np.isfinite(table[:, 0]).all() and np.isfinite(table[:, 2]).sum() == sizes[2]
    assert choice.range_test.num_lanes == 2 * 5 and choice.seconds > 0  # grid x seeds


def test_schedules_and_optimizer_follow_the_winner(choice):
    steps = jnp.arange(choice.total_steps)
    lr = np.asarray(choice.schedule(steps))
    if choice.kind == "one_cycle":
        assert lr.max() == pytest.approx(choice.learning_rate, rel=1e-3)
        np.testing.assert_allclose(
            choice.momentum(steps), clrjax.one_cycle_momentum_schedule(72)(steps)
        )
    else:
        assert lr[0] == pytest.approx(choice.learning_rate) and choice.momentum is None
    tx = choice.optimizer()
    params = init_fn(jax.random.key(0))
    state = tx.init(params)
    assert float(state.hyperparams["weight_decay"]) == choice.hparams["weight_decay"]
    first = float(loss_fn(params, TRAIN))
    for _ in range(20):
        grads = jax.grad(loss_fn)(params, TRAIN)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss_fn(params, TRAIN)) < first


def test_save_load_and_repr(choice, tmp_path):
    path = tmp_path / "choice.npz"
    choice.save(path)
    loaded = clrjax.ScheduleChoice.load(path)
    assert (loaded.kind, loaded.learning_rate, loaded.hparams) == (
        choice.kind,
        choice.learning_rate,
        choice.hparams,
    )
    assert loaded.candidates == choice.candidates
    for a, b in zip(loaded.rungs, choice.rungs, strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.candidates, b.candidates)
    np.testing.assert_array_equal(loaded.range_test.losses, choice.range_test.losses)
    np.testing.assert_array_equal(loaded.schedule(jnp.arange(72)), choice.schedule(jnp.arange(72)))
    with pytest.raises(ValueError, match="factory"):
        loaded.optimizer()
    assert isinstance(loaded.optimizer(clrjax.pytorch_sgd), optax.GradientTransformation)
    text = repr(choice)
    assert choice.kind in text and "candidates raced over 3 rungs" in text
    with pytest.raises(ValueError, match="not a ScheduleChoice"):
        choice.range_test.save(tmp_path / "rt.npz")
        clrjax.ScheduleChoice.load(tmp_path / "rt.npz")


def test_without_a_metric_a_run_is_charged_at_most_trust_ratio_times_its_lowest_loss():
    # Rows end 40% above their lowest (a classifier's overconfidence) or 2% above.
    def scores(loss_last_over_min):
        loss = np.array([[1.0, 0.5, 0.5 * loss_last_over_min]] * 3) * [[1.0], [1.1], [1.2]]
        return {"loss": loss}

    over = _find_schedule._scores(scores(1.4), has_metric=False, sign=1.0)
    np.testing.assert_allclose(over, -1.05 * np.array([0.5, 0.55, 0.6]))  # the rise is capped
    calm = _find_schedule._scores(scores(1.02), has_metric=False, sign=1.0)
    np.testing.assert_allclose(calm, [-0.51, -0.561, -0.612])  # by the last loss


def test_a_well_behaved_regression_without_a_metric_races_every_rung():
    # A noisy linear regression: the decay kind's high peaks end more than 5% above their
    # lowest validation loss, which used to distrust the rung and end the race early.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(384, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3 * rng.normal(size=384)).astype(np.float32)

    def mse(w, batch):
        return jnp.mean((batch[0] @ w - batch[1]) ** 2)

    choice = clrjax.find_schedule(
        mse,
        jnp.zeros(4),
        (x[:256], y[:256]),
        val_data=(x[256:], y[256:]),
        total_steps=90,
        batch_size=16,
        search=clrjax.Search(range_test_steps=50, start_lr=1e-4, max_extensions=0),
    )
    assert len(choice.rungs) == 3 and all(r.trusted for r in choice.rungs)
    assert choice.decided_by.startswith("rung 3 of 3")


WIDE = dataclasses.replace(SEARCH, end_lr=1e4)  # room for peaks past the bracket


def _peak_scored(monkeypatch, score_of_peak, short_score=None):
    """find_schedule's race with every run scored ``score_of_peak(its peak)`` (no training).

    ``short_score`` scores the first rung's runs instead, when given.
    The range test is real; its span bounds the peaks added (``WIDE``).
    """

    def fake_train_lanes(task, start, data, *, num_steps, schedules, eval_steps, **kwargs):
        peaks = schedules["learning_rate"].max(axis=0).astype(float)
        short = short_score is not None and num_steps == QUICK["total_steps"] // 9
        metric = (short_score if short else score_of_peak)(peaks)
        metric = np.repeat(metric[:, None], len(eval_steps), axis=1)
        scores = {"loss": -metric, "metric": metric}
        lanes = len(peaks)
        return _training.Trained(
            np.zeros((lanes, num_steps)), scores, eval_steps, np.full(lanes, -1), "fake"
        )

    monkeypatch.setattr(_find_schedule, "train_lanes", fake_train_lanes)


def test_a_leading_top_peak_is_raced_past_up_to_max_extensions(monkeypatch):
    _peak_scored(monkeypatch, lambda peaks: peaks)  # the higher the peak, the better
    search = dataclasses.replace(WIDE, max_extensions=2)
    with pytest.warns(UserWarning, match="top peak raced .*max_extensions \\(2\\)"):
        choice = clrjax.find_schedule(
            loss_fn, PARAMS, TRAIN, val_data=VAL, val_metric=accuracy, **QUICK | {"search": search}
        )
    added = [c for c in choice.candidates if c.source == _candidates.BEYOND_EDGE]
    assert len(added) == 2  # the bound, although the top led every rung
    top = max(c.peak for c in choice.candidates if c.source != _candidates.BEYOND_EDGE)
    step = added[0].peak / top
    assert 1.5 < step <= _find_schedule.PEAK_RATIO * (1 + 1e-9)
    np.testing.assert_allclose(added[1].peak, added[0].peak * step, rtol=1e-6)
    assert added[0].kind == added[1].kind
    assert choice.candidates[choice.winner] == added[1] and not choice.interior
    assert "the top peak raced" in repr(choice)
    first = choice.rungs[0]
    assert len(first.candidates) == len(choice.candidates)  # both raced on the first rung
    assert first.scores.shape[1] == 1


def test_a_peak_past_the_top_that_wins_leaves_an_interior_winner(monkeypatch):
    best = {}

    def score(peaks):  # best one bracket step above the bracket's top
        return -np.abs(np.log(peaks / best["peak"]))

    _peak_scored(monkeypatch, score)
    search = dataclasses.replace(WIDE, max_extensions=3)
    run = functools.partial(
        clrjax.find_schedule, loss_fn, PARAMS, TRAIN, val_data=VAL, val_metric=accuracy
    )
    best["peak"] = 1e9  # first: learn the bracket (the top wins; no extension)
    with pytest.warns(UserWarning, match="max_extensions \\(0\\)"):
        plain = run(**QUICK | {"search": dataclasses.replace(search, max_extensions=0)})
    top = max(c.peak for c in plain.candidates)
    assert not plain.interior
    best["peak"] = top * 2
    choice = run(**QUICK | {"search": search})
    added = [c for c in choice.candidates if c.source == _candidates.BEYOND_EDGE]
    assert choice.interior and choice.candidates[choice.winner] == added[0]
    assert len(added) == 2  # one step past the winner, which lost
    assert "peak raced" not in repr(choice)


def test_the_top_peak_survives_a_first_rung_that_ranks_it_last(monkeypatch):
    _peak_scored(monkeypatch, lambda peaks: peaks, short_score=lambda peaks: -peaks)
    search = dataclasses.replace(SEARCH, max_extensions=0)
    with pytest.warns(UserWarning, match="top peak raced"):
        choice = clrjax.find_schedule(
            loss_fn, PARAMS, TRAIN, val_data=VAL, val_metric=accuracy, **QUICK | {"search": search}
        )
    first, second = choice.rungs[0], choice.rungs[1]
    assert len(second.candidates) == _find_schedule.RUNG_KEEP[0] + 1
    top = max(c.peak for c in choice.candidates)
    assert choice.learning_rate == top  # last on the short rung, best on the long ones
    assert choice.winner not in _race.survivors(first, _find_schedule.RUNG_KEEP[0])


def test_metric_mode_min_races_for_the_lowest_metric(monkeypatch):
    _peak_scored(monkeypatch, lambda peaks: peaks)  # the metric grows with the peak
    search = dataclasses.replace(SEARCH, metric_mode="min", max_extensions=0)
    with pytest.warns(UserWarning, match="bottom peak raced"):
        choice = clrjax.find_schedule(
            loss_fn, PARAMS, TRAIN, val_data=VAL, val_metric=accuracy, **QUICK | {"search": search}
        )
    assert choice.learning_rate == min(c.peak for c in choice.candidates)
    assert choice.score == "-validation metric"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(val_data=None), ValueError, "val_data is required"),
        (dict(val_data=(VAL[0][:, :4], VAL[1])), ValueError, "val_data"),
        (dict(total_steps=1), ValueError, "total_steps"),
        (dict(optimizer=lambda lr: optax.sgd(lr)), ValueError, "learning_rate"),
        (dict(optimizer=optax.sgd(0.1)), TypeError, "factory"),
        (dict(kinds=("cosine",)), ValueError, "kinds"),
        (dict(kinds=()), ValueError, "kinds"),
        (dict(val_metric="accuracy"), TypeError, "val_metric"),
        (dict(decay_rate=0.0), ValueError, "decay_rate"),
        (dict(grid={"momentum_typo": [0.9]}), ValueError, "momentum_typo"),
        (dict(grid={"momentum": [0.9, 0.95]}), ValueError, "one-cycle cycles"),
        (dict(data=iter([TRAIN])), TypeError, "data is a one-pass iterator"),
        (dict(kinds=("decay", "decay")), ValueError, "kinds lists 'decay' more than once"),
        (dict(range_test_steps=5), ValueError, "range_test_steps"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        args = fold(clrjax.find_schedule, {**FAST, "val_data": VAL, **kwargs})
        data = args.pop("data", TRAIN)
        clrjax.find_schedule(loss_fn, None, data, **args)


def test_an_optimizer_without_momentum_races_without_it():
    sgd = functools.partial(optax.sgd, momentum=None)
    choice = clrjax.find_schedule(
        loss_fn, None, TRAIN, val_data=VAL, optimizer=sgd, kinds=("one_cycle",), **FAST
    )
    assert choice.momentum_name is None and choice.momentum is None
    assert choice.score == "-validation loss"
    assert {c.kind for c in choice.candidates} == {"one_cycle"}
    assert "rung" in choice.decided_by


def test_find_schedule_step_races_the_users_train_step():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)

    def make_state(key):
        params = init_fn(key)
        return {"params": params, "opt": tx.init(params)}

    def train_step(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss

    def val_step(state, batch):
        return {
            "loss": loss_fn(state["params"], batch),
            "accuracy": accuracy(state["params"], batch),
        }

    kw = {k: v for k, v in FAST.items() if k != "model"}
    step_choice = clrjax.find_schedule_step(
        train_step,
        None,
        TRAIN,
        val_data=VAL,
        val_step=val_step,
        metric_key="accuracy",
        **kw,
        model=clrjax.Model(init_fn=make_state),
    )
    assert step_choice.momentum_name == "momentum"
    assert step_choice.base_momentum == pytest.approx(0.9)
    assert step_choice.factory is None and step_choice.score == "validation metric"
    assert np.nanmax(step_choice.candidate_scores()) > 0.8
    assert [r.num_steps for r in step_choice.rungs] == [8, 24, 72]


def test_plot_marks_the_candidates_and_the_winner(choice):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    curve_ax, race_ax = choice.plot()
    (ticks,) = [line for line in curve_ax.lines if line.get_gid() == "clrjax-candidate"]
    assert len(ticks.get_xdata()) == len({c.peak for c in choice.candidates})
    (winner,) = [line for line in race_ax.lines if line.get_gid() == "clrjax-winner"]
    np.testing.assert_allclose(winner.get_ydata(), choice.candidate_scores()[choice.winner])
    raced = [line for line in race_ax.lines if line.get_gid() == "clrjax-race"]
    assert len(raced) == len(choice.candidates) - 1
    plt.close(curve_ax.figure)


def test_model_state_is_threaded_through_the_race():
    def stateful_loss(params, count, batch):
        return loss_fn(params, batch), count + 1.0

    def stateful_accuracy(params, count, batch):
        return accuracy(params, batch) * (count > 0)  # the state reached validation

    choice = clrjax.find_schedule(
        stateful_loss,
        None,
        TRAIN,
        val_data=VAL,
        val_metric=stateful_accuracy,
        kinds=("decay",),
        total_steps=27,
        batch_size=32,
        model=clrjax.Model(init_fn=init_fn, state=jnp.float32(0.0)),
        search=clrjax.Search(range_test_steps=20, start_lr=1e-4),
    )
    assert np.nanmax(choice.candidate_scores()) > 0.5


PARAMS = init_fn(jax.random.key(0))
QUICK = dict(
    total_steps=18, batch_size=32, search=clrjax.Search(range_test_steps=10, start_lr=1e-4)
)


@pytest.mark.parametrize("case", ["nan_metric", "nan_val_data"])
def test_a_race_that_nothing_scored_is_refused(case):
    # Regression: candidate 0 won with a score of -inf, without an error or a warning.
    if case == "nan_metric":
        kw = dict(val_data=VAL, val_metric=lambda params, batch: jnp.float32(jnp.nan))
    else:
        kw = dict(val_data=(np.full_like(VAL[0], np.nan), VAL[1]))
    with pytest.raises(ValueError, match=r"no run of race rung 1 .*val_metric.*val_data"):
        clrjax.find_schedule(loss_fn, PARAMS, TRAIN, kinds="decay", **kw, **QUICK)


def test_candidates_without_a_score_are_reported_saved_and_loaded(choice, tmp_path):
    assert choice.unscored == () and "without a finite score" not in repr(choice)
    first = choice.rungs[0]
    scores = first.scores.copy()
    scores[1] = np.nan  # candidate first.candidates[1] diverged
    failed = choice.rungs[0]._replace(scores=scores)
    changed = dataclasses.replace(choice, rungs=(failed, *choice.rungs[1:]))
    assert changed.unscored == (int(first.candidates[1]),)
    assert "1 without a finite score (see .unscored)" in repr(changed)
    changed.save(tmp_path / "c.npz")
    assert clrjax.ScheduleChoice.load(tmp_path / "c.npz").unscored == changed.unscored


def test_a_total_steps_too_big_for_the_memory_is_refused_before_anything_runs(monkeypatch):
    # Regression: total_steps=10**9 passed validation, then filled the machine's memory.
    def nothing_may_run(*args, **kwargs):
        raise AssertionError("the range test ran")

    monkeypatch.setattr(clrjax._engine, "run", nothing_may_run)
    monkeypatch.setattr(_training, "host_memory_budget", lambda: 2.0**30)
    with pytest.raises(MemoryError, match=r"total_steps=1000000000: .* GiB of host memory"):
        clrjax.find_schedule(loss_fn, PARAMS, TRAIN, val_data=VAL, **dict(QUICK, total_steps=10**9))


def test_every_rung_checks_its_memory_before_building_its_arrays(monkeypatch):
    budgets = iter([math.inf, 1.0])  # the check before the range test passes, rung 1's fails
    monkeypatch.setattr(_training, "host_memory_budget", lambda: next(budgets))

    def never(*args, **kwargs):
        raise AssertionError("rung 1 was built")

    monkeypatch.setattr(_find_schedule, "schedule_arrays", never)
    with pytest.raises(MemoryError, match=r"total_steps=18: a race rung of \d+ lanes x 2 steps"):
        clrjax.find_schedule(loss_fn, PARAMS, TRAIN, val_data=VAL, **QUICK)


@pytest.mark.filterwarnings("ignore:find_schedule. the winner")  # a 7-step curve: edges are fine
def test_range_test_steps_must_give_a_suggestion():
    # Regression: 5 passed validation, then failed with "gave no suggestion".
    minimum = _candidates.MIN_RANGE_TEST_STEPS
    with pytest.raises(ValueError, match=f"range_test_steps must be >= {minimum}, got 5"):
        clrjax.find_schedule(
            loss_fn,
            PARAMS,
            TRAIN,
            val_data=VAL,
            **dict(QUICK, search=clrjax.Search(range_test_steps=5, start_lr=1e-4)),
        )
    choice = clrjax.find_schedule(
        loss_fn,
        PARAMS,
        TRAIN,
        val_data=VAL,
        kinds="decay",
        **dict(QUICK, search=clrjax.Search(range_test_steps=minimum, start_lr=1e-4)),
    )
    assert choice.range_test.num_steps == minimum


def test_ctrl_c_in_the_race_keeps_the_range_test_and_the_finished_rungs(monkeypatch):
    calls = []

    def interrupted_second_rung(*args, **kwargs):
        calls.append(kwargs["num_steps"])
        if kwargs["num_steps"] > calls[0]:  # the second rung (the first may have grown)
            raise KeyboardInterrupt
        return _find_schedule.train_lanes.__wrapped__(*args, **kwargs)

    interrupted_second_rung.__wrapped__ = _find_schedule.train_lanes
    monkeypatch.setattr(_find_schedule, "train_lanes", interrupted_second_rung)
    with pytest.raises(clrjax.FindScheduleInterrupted) as info:
        clrjax.find_schedule(loss_fn, PARAMS, TRAIN, val_data=VAL, val_metric=accuracy, **QUICK)
    stop = info.value
    assert isinstance(stop, KeyboardInterrupt) and calls[0] == 2 and calls[-1] == 6
    assert isinstance(stop.range_test, clrjax.RangeTestResult) and stop.range_test.num_lanes == 5
    assert [r.num_steps for r in stop.rungs] == [2]
    assert len(stop.rungs[0].candidates) == len(stop.candidates)
    assert stop.leader == stop.candidates[_race.winner(stop.rungs)]
    assert "after 1 of its race's rungs" in str(stop)
    assert clrjax.FindScheduleInterrupted in (getattr(clrjax, n) for n in clrjax.__all__)


def test_train_step_side_effects_run_at_trace_time_only():
    # docs/range_test.md: a range test traces each step twice (measure, compile), never per step.
    traces = {"train": 0, "val": 0}
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)

    def train_step(state, batch):
        traces["train"] += 1
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss

    def val_step(state, batch):
        traces["val"] += 1
        return {"loss": loss_fn(state["params"], batch)}

    state = {"params": PARAMS, "opt": tx.init(PARAMS)}
    validation = clrjax.Validation(VAL, step=val_step)
    for _ in range(2):  # the same call again traces nothing
        clrjax.range_test_step(
            train_step, state, TRAIN, batch_size=32, num_steps=20, validation=validation
        )
        assert traces == {"train": 2, "val": 2}


def test_a_bad_loss_fn_is_named():
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        clrjax.find_schedule("loss", None, TRAIN, val_data=VAL, total_steps=72, batch_size=32)


def test_missing_params_are_named_before_the_other_arguments_are_checked():
    with pytest.raises(ValueError, match=r"params must be given unless Model\.init_fn"):
        clrjax.find_schedule(loss_fn, None, TRAIN, val_data=None, total_steps=72)


def make_state(key):
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    params = init_fn(key)
    return {"params": params, "opt": tx.init(params)}


def step(state, batch):
    return state, loss_fn(state["params"], batch)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(val_step="val"), TypeError, "val_step must be callable"),
        (dict(metric_key=1), TypeError, "metric_key must be a string"),
        (dict(model=clrjax.Model()), ValueError, "train_state must be given unless"),
    ],
)
def test_find_schedule_step_names_bad_arguments(kwargs, error, match):
    args = dict(train_step=step, val_step=step, model=clrjax.Model(init_fn=make_state))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        clrjax.find_schedule_step(
            args.pop("train_step"), None, TRAIN, val_data=VAL, total_steps=72, **args
        )


def test_a_bad_train_step_is_refused_before_init_fn_runs():
    calls = []

    def init(key):
        calls.append(key)
        return make_state(key)

    with pytest.raises(TypeError, match="train_step must be callable"):
        clrjax.find_schedule_step(
            "step",
            None,
            TRAIN,
            val_data=VAL,
            val_step=step,
            total_steps=72,
            model=clrjax.Model(init_fn=init),
        )
    assert calls == []


def test_a_range_test_without_suggestions_is_refused():
    def nan_loss(params, batch):  # every lane diverges at once
        return loss_fn(params, batch) * jnp.nan

    with pytest.raises(ValueError, match="the range test gave no suggestion on any lane"):
        clrjax.find_schedule(nan_loss, None, TRAIN, val_data=VAL, **FAST)


def test_a_choice_of_an_unknown_kind_is_refused(choice):
    with pytest.raises(ValueError, match="kind must be one of"):
        dataclasses.replace(choice, kind="cosine")


def test_a_val_metric_that_is_not_a_scalar_is_refused():
    def per_class(params, batch):
        return jnp.ones(3) * accuracy(params, batch)

    with pytest.raises(ValueError, match="val_metric must return a scalar"):
        clrjax.find_schedule(loss_fn, None, TRAIN, val_data=VAL, val_metric=per_class, **FAST)


def test_a_batch_larger_than_the_data_is_refused_before_the_range_test(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the range test ran")

    monkeypatch.setattr(_find_schedule, "run_range_test", never)
    with pytest.raises(
        ValueError, match=r"batch_size \(300\) is larger than the number of examples in data"
    ):
        clrjax.find_schedule(loss_fn, PARAMS, TRAIN, val_data=VAL, total_steps=72, batch_size=300)
