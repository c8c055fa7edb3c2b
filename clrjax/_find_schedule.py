"""``find_schedule``: the range test proposes schedules, a race of them decides.

The design and its defaults come from measurements on mnist1d, digits, mnist1d
with AdamW and a held-out MLP (``docs/find_schedule.md``).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from clrjax import _engine, _grid, _injected
from clrjax import _numerics as num
from clrjax._candidates import (
    KINDS,
    MOMENTUM_NAMES,
    Candidate,
    beyond_edge,
    edge,
    momentum_default,
    peak_bracket,
    schedule_arrays,
)
from clrjax._loss_task import check_factory
from clrjax._options import (
    SEARCH_KEYWORDS,
    Curve,
    Execution,
    Model,
    Search,
    check_model_applies,
    engine_request,
    moved_keywords,
    moved_to,
    resolve,
)
from clrjax._pytorch_sgd import pytorch_sgd
from clrjax._race import Rung, successive_halving, winner
from clrjax._range_test import loss_task, run_range_test, start_params
from clrjax._range_test_step import STEP_MODEL_REFUSED, start_state
from clrjax._result import RangeTestResult
from clrjax._schedule_choice import FindScheduleInterrupted, ScheduleChoice
from clrjax._step_task import StepTask
from clrjax._suggest import SUGGESTION_METHODS
from clrjax._training import check_rung_memory, train_lanes

RANGE_TEST_SEEDS = 5  # range-test lanes per grid point (suggestions: their log-median)
PEAK_RATIO = 2.5  # the largest ratio between neighbouring candidate peaks
BRACKET_TOP = 2.0  # the top peak, as a multiple of the LR of the lowest range-test loss
RUNG_FRACTIONS = (1 / 9, 1 / 3, 1.0)  # each rung's budget, as a fraction of total_steps
RUNG_KEEP = (4, 2)  # candidates entering the second and the third rung
RUNG_SEEDS = (1, 1, 2)  # runs per candidate in each rung (scores are their mean)
TRUST_RATIO = 1.05  # without a metric: a run is charged at most this x its lowest val loss
RANGE_TEST_CURVE = Curve()  # the range test's ramp, smoothing and divergence rules
# The Execution fields find_schedule took as keywords before they moved:
_EXECUTION_KEYWORDS = moved_to("execution", "strategy shard_lanes max_memory progress mesh")


@moved_keywords(
    {
        **SEARCH_KEYWORDS,
        **moved_to("model", "init_fn state has_aux takes_rng"),
        **_EXECUTION_KEYWORDS,
    }
)
def find_schedule(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Any,
    *,
    val_data: Any,
    total_steps: int,
    batch_size: int = 128,
    optimizer: Callable[..., optax.GradientTransformation] | None = None,
    grid: Mapping[str, Sequence[float]] | None = None,
    val_metric: Callable[..., Any] | None = None,
    kinds: Sequence[str] = KINDS,
    key: jax.Array | int | None = None,
    model: Model | None = None,
    search: Search | None = None,
    execution: Execution | None = None,
) -> ScheduleChoice:
    r"""Picks a learning-rate schedule that wins, by racing the range test's candidates.

    1. **Range test** (:func:`clrjax.range_test`, 5 seeds per ``grid`` point):
       the curve proposes a bracket of peak learning rates from the ``valley``
       pick up to twice the learning rate of the lowest loss, spaced by at most
       2.5x (6-7 peaks on the tasks measured); every suggestion method's pick
       falls near one of them (the erratic ones outside are reported).
    2. **Candidates**: every peak times every schedule kind (``"one_cycle"``,
       with the momentum or Adam's ``b1`` cycled 0.95 -> 0.85 -> 0.95 when the
       optimizer has one, and ``"decay"``: the peak decayed by ``decay_rate``
       every epoch), times every ``grid`` point.
    3. **Race** (successive halving, Jamieson & Talwalkar 2016): every candidate
       trains as a lane of one compiled program for a ninth of ``total_steps``
       (its schedule scaled to that budget), scored on ``val_data`` after every
       epoch; the best 4 train again for a third of the budget; the best 2 for
       the full budget with two seeds each. The best of the last rung wins.
    4. **Past the edges**: when a rung's best candidate has the top (bottom)
       peak raced for its kind and grid point, the next peak one step further
       trains on that rung's budget and seeds before it ranks (at most
       ``Search.max_extensions`` times, within the range test's span); the
       best top-peak candidate always enters the second rung (short runs favour
       small peaks). A ``UserWarning`` says when ``max_extensions`` stopped the
       race at an edge (``ScheduleChoice.interior``).

    **Scores** (higher is better). With ``val_metric`` (e.g. accuracy): the
    metric after a run's last step (negated with
    ``Search(metric_mode="min")``). Without: minus the validation loss after
    the last step, charged at most 5% above the run's lowest: a classifier's
    validation loss rises from overconfidence while its predictions may still
    improve, and that rise is not held against it. Pass ``val_metric`` for
    classifiers: measured, the validation loss alone can prefer peaks 8-16x too
    small.

    **Cost.** About ``n/9 + 4/3 + 4`` runs of ``total_steps`` for ``n``
    candidates (about 7 for 14 candidates), plus the range test, a few
    compiles, and the runs of any peak raced past an edge: measured on CPU
    (mnist1d MLP, fresh processes) 1.5x the time of training the chosen
    schedule's 5 seeds as one ``jax.jit(jax.vmap(...))`` program (1.0-1.3x
    before edges were raced; ``docs/benchmarks.md``); on accelerators, where
    lanes run side by side, less. Each stage's time is in the result (``rungs``, ``seconds``) and is
    printed with ``progress``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> loss`` (the protocol of
        :func:`clrjax.range_test`, with :class:`clrjax.Model`'s ``state``,
        ``has_aux``, ``takes_rng``).
      params: initial parameters, or ``None`` with ``Model.init_fn``.
      data: training data: a pytree of arrays sharing a leading example axis
        (each seed draws its own shuffled batches), or a re-iterable stream of
        batches (a list of ``(x, y)`` batches, a ``torch`` ``DataLoader``, an
        object whose ``__iter__`` starts a new pass; not a one-pass generator).
        A stream is read from its start by every stage (the range test, each
        rung), in its own order: every lane steps on the same batches, and
        seeds differ by ``Model.init_fn`` and ``Model.takes_rng`` keys only.
        Only one chunk of its batches is held at a time
        (``docs/find_schedule.md``).
      val_data: validation data shaped like ``data`` (never trained on): a
        pytree of arrays or a list of batches, held in memory.
      total_steps: the training budget the schedule is for (>= 2).
      batch_size: examples per step; does not apply to a stream (its batches'
        size is the one read).
      optimizer: a factory ``(learning_rate, **hparams) -> GradientTransformation``
        (default :func:`clrjax.pytorch_sgd`).
      grid: ``{name: values}`` of optimizer arguments raced as well (e.g.
        ``{"weight_decay": [0, 5e-4]}``: Smith's recipe searches it this way).
      val_metric: ``val_metric(params, batch) -> scalar``, higher is better
        (e.g. accuracy; ``Search(metric_mode="min")``: lower is better).
      kinds: the schedule kinds raced, a subset of ``("one_cycle", "decay")``.
      key: a PRNG key or an int seed (``None``: seed 0).
      model: a :class:`clrjax.Model`: ``init_fn(key) -> params`` (every seed
        draws its own parameters), model ``state`` (``val_metric(params, state,
        batch)`` then), ``has_aux``, ``takes_rng``, ``compute_dtype`` (for the
        range test and the race; ``accumulation_steps`` does not apply).
      search: a :class:`clrjax.Search`: the range test's steps and learning
        rates, ``steps_per_epoch`` (default ``len(data) // batch_size``, a
        stream's ``len(data)``; required for a stream without ``len``), the
        ``"decay"`` kind's ``decay_rate``, the validation batch size.
      execution: an :class:`clrjax.Execution` for the range test and the race;
        its ``progress`` prints each stage's time on stderr (``None``: when
        stderr is a terminal); its ``chunk_size`` is the range test's (the race
        runs an epoch per chunk, with a stream at most ``chunk_size`` steps).

    Returns:
      The :class:`clrjax.ScheduleChoice`.

    Raises:
      ValueError, TypeError: for invalid arguments, naming the argument (a keyword
        that moved into an option object names its new home; a one-pass
        iterator as ``data``; a stream without ``len`` and without
        ``Search.steps_per_epoch``); also for a race rung where no run has a
        finite score (``val_metric``, ``val_data``).
      MemoryError: ``total_steps`` too long for a rung's per-step arrays (or a
        stream's chunk of batches: lower ``Execution.chunk_size``).
      FindScheduleInterrupted: Ctrl-C during the race, with what finished.

    Examples:
      >>> import jax, jax.numpy as jnp, clrjax
      >>> x = jax.random.normal(jax.random.key(0), (512, 3))
      >>> y = x @ jnp.array([1.0, -2.0, 0.5])
      >>> def loss_fn(w, batch):
      ...     return jnp.mean((batch[0] @ w - batch[1]) ** 2)
      >>> choice = clrjax.find_schedule(loss_fn, jnp.zeros(3), (x[:384], y[:384]),
      ...                               val_data=(x[384:], y[384:]), total_steps=90,
      ...                               batch_size=32,
      ...                               search=clrjax.Search(range_test_steps=50, start_lr=1e-4))
      >>> print(choice.kind in ("one_cycle", "decay"), 1e-4 < choice.learning_rate < 10)
      True True
      >>> sgd = choice.optimizer()  # clrjax.pytorch_sgd with the chosen schedules
    """
    begin = time.perf_counter()
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
    if val_metric is not None and not callable(val_metric):
        raise TypeError(f"val_metric must be callable, got {val_metric!r}")
    model = resolve("model", model)
    check_model_applies(model, "find_schedule", ("accumulation_steps",))
    params, _ = start_params(params, model)
    optimizer = pytorch_sgd if optimizer is None else optimizer
    if isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
        raise TypeError(
            "optimizer must be a factory (learning_rate, **hparams) -> GradientTransformation, "
            f"e.g. optax.adamw, got {optimizer!r}"
        )
    lane_grid = _grid.expand_grid(grid, None)
    check_factory(optimizer, lane_grid.optimizer_names)
    momentum_name, base_momentum = momentum_default(optimizer)
    _check_grid_not_cycled(lane_grid.optimizer_names, momentum_name)
    task = loss_task(loss_fn, optimizer, model, val_metric=val_metric)
    lane_tasks = _LaneTasks(
        range_test=dataclasses.replace(task, val_metric=None),
        race=task,
        start=(params, model.state),
        momentum_name=momentum_name,
        base_momentum=base_momentum,
        has_metric=val_metric is not None,
        grid_names=lane_grid.optimizer_names,
        factory=optimizer,
    )
    return _find(
        lane_tasks,
        data,
        val_data,
        begin=begin,
        total_steps=total_steps,
        batch_size=batch_size,
        grid=grid,
        kinds=kinds,
        key=key,
        search=resolve("search", search),
        execution=resolve("execution", execution),
    )


@moved_keywords(
    {**SEARCH_KEYWORDS, **moved_to("model", "init_fn takes_rng"), **_EXECUTION_KEYWORDS}
)
def find_schedule_step(
    train_step: Callable[..., Any],
    train_state: Any,
    data: Any,
    *,
    val_data: Any,
    val_step: Callable[..., Any],
    total_steps: int,
    batch_size: int = 128,
    grid: Mapping[str, Sequence[float]] | None = None,
    metric_key: str | None = None,
    loss_key: str = "loss",
    kinds: Sequence[str] = KINDS,
    key: jax.Array | int | None = None,
    model: Model | None = None,
    search: Search | None = None,
    execution: Execution | None = None,
) -> ScheduleChoice:
    """:func:`find_schedule` for your own ``train_step(state, batch) -> (state, metrics)``.

    The train state's optimizer must inject its hyperparameters
    (``optax.inject_hyperparams``, as for :func:`clrjax.range_test_step`): each
    lane's learning rate, its cycled ``momentum``/``b1`` (when injected) and its
    grid values are set in the state before every step. The range test runs
    through :func:`clrjax.range_test_step`, the race through the same train
    step. The result's :attr:`~clrjax.ScheduleChoice.schedule` and
    :attr:`~clrjax.ScheduleChoice.momentum` are the schedules to build your
    optimizer with (``ScheduleChoice.optimizer`` needs a factory).

    Args:
      train_step: ``train_step(state, batch[, key]) -> (state, metrics)``.
      train_state: the initial train state (or ``None`` with ``Model.init_fn``).
      data: training data: a pytree of arrays sharing a leading example axis,
        or a re-iterable stream of batches (as in :func:`find_schedule`).
      val_data: validation data shaped like ``data``.
      val_step: ``val_step(state, batch) -> metrics`` on validation batches.
      total_steps: the training budget the schedule is for (>= 2).
      batch_size: examples per step; does not apply to a stream.
      grid: ``{name: values}`` of injected hyperparameters raced as well.
      metric_key: the entry of ``val_step``'s metrics to maximise (e.g.
        ``"accuracy"``; ``Search(metric_mode="min")``: to minimise); ``None``:
        the validation loss decides (see :func:`find_schedule`).
      loss_key: the entry of mapping metrics that holds the loss.
      kinds: the schedule kinds raced.
      key: a PRNG key or an int seed (``None``: seed 0).
      model: a :class:`clrjax.Model` with ``init_fn(key) -> train_state``
        (every seed draws its own state) and ``takes_rng`` (``train_step``
        takes a PRNG key last); its other fields are the train step's own.
      search: a :class:`clrjax.Search` (as in :func:`find_schedule`).
      execution: an :class:`clrjax.Execution` (as in :func:`find_schedule`).

    Returns:
      The :class:`clrjax.ScheduleChoice` (its ``factory`` is ``None``).
    """
    begin = time.perf_counter()
    if not callable(train_step):
        raise TypeError(f"train_step must be callable, got {train_step!r}")
    if not callable(val_step):
        raise TypeError(f"val_step must be callable, got {val_step!r}")
    if metric_key is not None and not isinstance(metric_key, str):
        raise TypeError(f"metric_key must be a string or None, got {metric_key!r}")
    if not isinstance(loss_key, str):
        raise TypeError(f"loss_key must be a string, got {loss_key!r}")
    model = resolve("model", model)
    check_model_applies(model, "find_schedule_step", STEP_MODEL_REFUSED)
    example, what = start_state(train_state, model, concrete=True)
    lane_grid = _grid.expand_grid(grid, None)
    _injected.check_injected(example, ("learning_rate", *lane_grid.optimizer_names), what)
    values = _injected.injected_values(example)
    scheduled = _injected.scheduled_hyperparams(example)
    momentum_name = next((n for n in MOMENTUM_NAMES if n in values and n not in scheduled), None)
    base_momentum = None if momentum_name is None else float(values[momentum_name])
    _check_grid_not_cycled(lane_grid.optimizer_names, momentum_name)
    task = StepTask(
        train_step=train_step,
        val_step=val_step,
        loss_key=loss_key,
        takes_rng=bool(model.takes_rng),
        init_fn=model.init_fn,
        metric_key=metric_key,
    )
    lane_tasks = _LaneTasks(
        range_test=dataclasses.replace(task, val_step=None, metric_key=None),
        race=task,
        start=train_state,
        momentum_name=momentum_name,
        base_momentum=base_momentum,
        has_metric=metric_key is not None,
        grid_names=lane_grid.optimizer_names,
        factory=None,
    )
    return _find(
        lane_tasks,
        data,
        val_data,
        begin=begin,
        total_steps=total_steps,
        batch_size=batch_size,
        grid=grid,
        kinds=kinds,
        key=key,
        search=resolve("search", search),
        execution=resolve("execution", execution),
    )


def _check_grid_not_cycled(names: Sequence[str], momentum_name: str | None) -> None:
    if momentum_name is not None and momentum_name in names:
        raise ValueError(
            f"grid: {momentum_name!r} is what one-cycle cycles (0.95 -> 0.85 -> 0.95) and the "
            "decay kind holds at the optimizer's default; race other hyperparameters, or set "
            f"{momentum_name} in the optimizer "
            f"(e.g. functools.partial(factory, {momentum_name}=...))"
        )


class _LaneTasks(NamedTuple):
    """What an entry point hands :func:`_find`: its tasks, their start, what the race cycles.

    Attributes:
      range_test: the range test's task (no validation).
      race: the race's task (scored on the validation set).
      start: the engine's start state, shared by all lanes.
      momentum_name: the injected momentum (``"momentum"``/``"b1"``) one-cycle cycles, or
        ``None``.
      base_momentum: its value (held by the ``"decay"`` kind), or ``None``.
      has_metric: the race scores by a metric, not the validation loss.
      grid_names: the raced grid's optimizer hyperparameters.
      factory: the optimizer factory (``ScheduleChoice.optimizer``), or ``None``.
    """

    range_test: _engine.Task
    race: _engine.Task
    start: Any
    momentum_name: str | None
    base_momentum: float | None
    has_metric: bool
    grid_names: tuple[str, ...]
    factory: Any


class _Settings(NamedTuple):
    """What the race needs besides the task (validated)."""

    total_steps: int
    batch_size: int
    kinds: tuple[str, ...]
    steps_per_epoch: int
    decay_rate: float
    val: Any
    progress: bool
    stream_chunk: int | None  # with a stream of batches: the most steps per chunk, else None
    batch_bytes: int  # with a stream: the bytes of one of its batches, else 0
    max_extensions: int
    metric_sign: float  # 1: the metric is maximised, -1: minimised

    def report(self, what: str, since: float) -> None:
        if self.progress:
            print(f"{what}: {time.perf_counter() - since:.1f} s", file=sys.stderr)

    def chunk_size(self, num_steps: int) -> int:
        """Steps per chunk of a rung: an epoch (a stream's: at most ``Execution.chunk_size``)."""
        return min(self.steps_per_epoch, num_steps, self.stream_chunk or num_steps)

    def check_memory(self, num_steps: int, num_lanes: int, num_seeds: int) -> None:
        """:func:`check_rung_memory` of a rung: a stream holds a chunk of batches, no orders."""
        stream = self.stream_chunk is not None
        check_rung_memory(
            self.total_steps,
            num_steps,
            num_lanes,
            0 if stream else num_seeds,
            self.batch_size,
            chunk_bytes=self.chunk_size(num_steps) * self.batch_bytes,
        )


def _stream_epoch(data: Any, steps_per_epoch: int | None) -> tuple[Any, int]:
    """A stream's first batch and its steps per epoch; refuses what cannot be read again.

    Every stage (the range test, each rung) reads the stream from its start, so
    a one-pass iterator is refused before anything is read; ``len(data)`` is the
    number of batches of an epoch unless ``Search.steps_per_epoch`` says.
    """
    if isinstance(data, Iterator):
        raise TypeError(
            f"data is a one-pass iterator ({type(data).__name__}), but find_schedule reads data "
            "from its start once per stage (the range test and every rung of the race); pass a "
            "re-iterable: a list of batches, a DataLoader, or an object whose __iter__ starts "
            "a new pass"
        )
    if steps_per_epoch is None:
        try:
            steps_per_epoch = len(data)
        except TypeError:
            raise TypeError(
                f"data ({type(data).__name__}) has no len(), so its epoch is unknown: pass "
                "Search(steps_per_epoch=...), the batches of one epoch (the 'decay' kind decays "
                "once per epoch, runs are scored after each)"
            ) from None
        num.check_count("len(data)", steps_per_epoch)
    return _engine.BatchStream(data).peek(), steps_per_epoch


def _find(
    tasks: _LaneTasks,
    data: Any,
    val_data: Any,
    *,
    begin: float,
    total_steps: int,
    batch_size: int,
    grid: Mapping[str, Sequence[float]] | None,
    kinds: Sequence[str],
    key: Any,
    search: Search,
    execution: Execution,
) -> ScheduleChoice:
    """The arguments both entry points share: validate, range test, race."""
    num.check_count("total_steps", total_steps, minimum=2)
    num.check_count("batch_size", batch_size)
    if val_data is None:
        raise ValueError("val_data is required: the race scores candidates on held-out data")
    if not isinstance(kinds, (str, Iterable)):
        raise TypeError(f"kinds must be a schedule kind or a sequence of them, got {kinds!r}")
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds:
        raise ValueError("kinds must name at least one schedule kind")
    for kind in kinds:
        num.check_choice("kinds", kind, KINDS)
    num.check_distinct("kinds", kinds)
    stream = _engine.is_batch_stream(data)
    if stream:
        like, steps_per_epoch = _stream_epoch(data, search.steps_per_epoch)
        batch_size = _engine.example_count(like, "a batch of data")  # the stream's, not ours
    else:
        num_examples = _engine.example_count(data)
        if batch_size > num_examples:
            raise ValueError(
                f"batch_size ({batch_size}) is larger than the number of examples in data "
                f"({num_examples})"
            )
        steps_per_epoch = search.steps_per_epoch or num_examples // batch_size
        like = jax.tree.map(lambda a: np.asarray(a)[:1], data)
    settings = _Settings(
        total_steps=total_steps,
        batch_size=batch_size,
        kinds=kinds,
        steps_per_epoch=steps_per_epoch,
        decay_rate=float(search.decay_rate),
        val=_engine.validation_batches(val_data, search.val_batch_size, like),
        progress=sys.stderr.isatty() if execution.progress is None else bool(execution.progress),
        stream_chunk=(execution.chunk_size or total_steps) if stream else None,
        batch_bytes=sum(np.asarray(a).nbytes for a in jax.tree.leaves(like)) if stream else 0,
        max_extensions=search.max_extensions,
        metric_sign=1.0 if search.metric_mode == "max" else -1.0,
    )
    settings.check_memory(total_steps, RUNG_KEEP[-1] * RUNG_SEEDS[-1], RUNG_SEEDS[-1])
    key = _grid.as_key(key)
    result = run_range_test(
        tasks.range_test,
        tasks.start,
        data,
        lane_grid=_grid.expand_grid(grid, list(range(RANGE_TEST_SEEDS))),
        accumulation_steps=1,
        batch_size=batch_size,
        num_steps=search.range_test_steps,
        start_lr=search.start_lr,
        end_lr=search.end_lr,
        key=key,
        shuffle="per_seed",
        validation=None,
        curve=RANGE_TEST_CURVE,
        execution=execution,
        progress=False,
    )
    settings.report(
        f"range test: {result.num_lanes} lanes x {search.range_test_steps} steps", begin
    )
    return _run_race(tasks, data, result, settings, key, execution, begin)


def _propose(
    curve: RangeTestResult, kinds: Sequence[str]
) -> tuple[list[Candidate], dict[str, dict[str, float]]]:
    """Every grid point's bracket of peaks x ``kinds``; the picks left outside, per point."""
    spreads = {m: curve.suggest_spread(m) for m in SUGGESTION_METHODS}
    candidates, outside = [], {}
    for g, (hparams, _) in enumerate(spreads[SUGGESTION_METHODS[0]]):
        picks = {m: spreads[m][g][1].median for m in SUGGESTION_METHODS}
        bracket = peak_bracket(picks, ratio=PEAK_RATIO, upper=BRACKET_TOP)
        point = {k: float(v) for k, v in hparams.items()}
        for peak, source in zip(bracket.peaks, bracket.sources, strict=True):
            candidates.extend(Candidate(kind, peak, point, source) for kind in kinds)
        if bracket.outside:
            outside[", ".join(f"{k}={v:g}" for k, v in point.items())] = bracket.outside
    return candidates, outside


def _run_race(
    tasks: _LaneTasks,
    data: Any,
    curve: RangeTestResult,
    settings: _Settings,
    key: jax.Array,
    execution: Execution,
    begin: float,
) -> ScheduleChoice:
    """Candidates from ``curve``, successive halving, the :class:`ScheduleChoice`."""
    candidates, outside = _propose(curve, settings.kinds)
    momentum_name, base_momentum = tasks.momentum_name, tasks.base_momentum
    if not candidates:
        raise ValueError(
            "the range test gave no suggestion on any lane (every lane diverged at once or "
            "its loss never fell); check Search.start_lr, Search.end_lr and the loss"
        )
    total, per_epoch = settings.total_steps, settings.steps_per_epoch
    budgets = [max(2, round(total * f)) for f in RUNG_FRACTIONS]
    race_key = jax.random.fold_in(key, 1)
    proposed = len(candidates)

    # Past the edges, up to the range test's span: a peak the range test saw diverge may still
    # train under one-cycle's warm-up (measured: up to 8x); one that fails scores NaN and loses.
    span = (float(curve.lrs[0]), float(curve.lrs[-1]))

    def further(best: Candidate) -> Candidate | None:
        return beyond_edge(candidates, best, ratio=PEAK_RATIO, limits=span)

    def extend(rung: Rung) -> list[int]:
        best = candidates[int(rung.candidates[int(np.argmax(rung.mean_scores))])]
        more = further(best) if len(candidates) - proposed < settings.max_extensions else None
        if more is None:
            return []
        candidates.append(more)
        return [len(candidates) - 1]

    def train(indices: np.ndarray, num_steps: int, num_seeds: int) -> tuple[np.ndarray, str, bool]:
        start_time = time.perf_counter()
        chosen = [candidates[i] for i in indices]
        runs = [c for c in chosen for _ in range(num_seeds)]
        settings.check_memory(num_steps, len(runs), num_seeds)
        lrs, moms = schedule_arrays(
            runs,
            num_steps,
            steps_per_epoch=per_epoch * num_steps / total,  # a shorter run keeps the decay's total
            decay_rate=settings.decay_rate,
            momentum=base_momentum if momentum_name else None,
        )
        schedules = {"learning_rate": lrs} | ({momentum_name: moms} if moms is not None else {})
        dtype = num.float_dtype()
        constants = {n: np.array([c.hparams[n] for c in runs], dtype) for n in tasks.grid_names}
        evals = np.union1d(np.arange(per_epoch - 1, num_steps, per_epoch), [num_steps - 1])
        trained = train_lanes(
            tasks.race,
            tasks.start,
            data,
            num_steps=num_steps,
            batch_size=settings.batch_size,
            schedules=schedules,
            constants=constants,
            seeds=np.tile(np.arange(num_seeds), len(chosen)),
            key=race_key,
            val=settings.val,
            eval_steps=evals,
            request=engine_request(
                execution, progress=False, chunk_size=settings.chunk_size(num_steps)
            ),
        )
        scores = _scores(trained.scores, has_metric=tasks.has_metric, sign=settings.metric_sign)
        settings.report(
            f"race rung: {len(chosen)} candidates x {num_seeds} seeds x {num_steps} steps "
            f"({trained.strategy})",
            start_time,
        )
        return scores.reshape(len(chosen), num_seeds), trained.strategy, True

    def top_peak(rung: Rung) -> list[int]:
        # Short runs favour small peaks (Wu et al., 2018): the best top peak that trained survives.
        scored = np.isfinite(rung.mean_scores)
        tops = [
            j
            for j, i in enumerate(rung.candidates)
            if scored[j] and edge(candidates, candidates[i]) > 0
        ]
        if not tops:
            return []
        return [int(rung.candidates[max(tops, key=lambda j: rung.mean_scores[j])])]

    def stop(rungs: tuple[Rung, ...]) -> FindScheduleInterrupted:
        return FindScheduleInterrupted(curve, tuple(candidates), rungs)

    rungs = successive_halving(
        train, proposed, budgets, list(RUNG_KEEP), RUNG_SEEDS, stop, extend, top_peak
    )
    best = candidates[winner(rungs)]
    settings.report(f"find_schedule: {len(candidates)} candidates, won by {best.label()}", begin)
    if further(best) is not None:  # at an edge, and the range test allows a step further
        side = "top" if edge(candidates, best) > 0 else "bottom"
        warnings.warn(
            f"find_schedule: the winner, {best.label()}, is the {side} peak raced for its kind "
            f"and grid point, and Search.max_extensions ({settings.max_extensions}) stopped "
            "the race from trying one further; a better peak may lie beyond it (raise "
            "Search.max_extensions, or total_steps if the rungs are too short to tell)",
            UserWarning,
            stacklevel=5,  # the caller of find_schedule(_step)
        )
    return ScheduleChoice(
        kind=best.kind,
        learning_rate=best.peak,
        hparams=best.hparams,
        total_steps=total,
        steps_per_epoch=float(per_epoch),
        decay_rate=settings.decay_rate,
        momentum_name=momentum_name,
        base_momentum=base_momentum,
        candidates=tuple(candidates),
        rungs=tuple(rungs),
        score=_score_name(tasks.has_metric, settings.metric_sign),
        range_test=curve,
        seconds=time.perf_counter() - begin,
        outside=outside,
        factory=tasks.factory,
    )


def _score_name(has_metric: bool, sign: float) -> str:
    """What the scores measure, e.g. ``"-validation loss"``."""
    if not has_metric:
        return "-validation loss"
    return "validation metric" if sign > 0 else "-validation metric"


def _scores(scores: Mapping[str, np.ndarray], *, has_metric: bool, sign: float) -> np.ndarray:
    """``(lanes,)`` scores of a rung's runs (higher is better, NaN: failed).

    With a metric: ``sign`` x the metric after the last step. Without: minus
    the last validation loss, charged at most :data:`TRUST_RATIO` times the
    run's lowest: a rise past that is the overconfidence of a classifier whose
    predictions may still improve, and is not held against it; a run whose
    loss keeps falling (a well-behaved regression) is scored by its last loss.

    Examples:
      >>> loss = np.array([[0.9, 0.5, 0.7], [0.9, 0.6, np.nan], [1.0, 0.7, 0.6]])
      >>> print(_scores({"loss": loss}, has_metric=False, sign=1.0))
      [-0.525    nan -0.6  ]
      >>> print(_scores({"metric": np.array([[0.2, 0.1]])}, has_metric=True, sign=-1.0))
      [-0.1]
    """
    if has_metric:
        return sign * scores["metric"][:, -1].astype(float)
    loss = scores["loss"].astype(float)
    final = loss[:, -1]
    lowest = np.min(np.where(np.isfinite(loss), loss, np.inf), axis=1)
    live = np.isfinite(final) & np.isfinite(lowest)
    return np.where(live, -np.minimum(final, TRUST_RATIO * lowest), np.nan)
