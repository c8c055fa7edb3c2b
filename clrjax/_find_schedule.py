"""``find_schedule``: the range test proposes schedules, a race of them decides."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from clrjax import _engine, _grid
from clrjax import _numerics as num
from clrjax._candidates import KINDS, Candidate, momentum_default, peak_bracket, schedule_arrays
from clrjax._engine.feeding import example_count, is_batch_stream, validation_batches
from clrjax._loss_task import LossTask, check_factory, check_params
from clrjax._pytorch_sgd import pytorch_sgd
from clrjax._race import rung_sizes, successive_halving
from clrjax._range_test import range_test
from clrjax._schedule_choice import ScheduleChoice
from clrjax._training import train_lanes

# The race's shape (see docs/find_schedule.md for the measurements behind it):
RUNG_FRACTIONS = (1 / 9, 1 / 3, 1.0)  # each rung's budget, as a fraction of total_steps
ETA = 3.0  # a rung keeps the best 1/ETA of the candidates of the one before
RUNG_SEEDS = (1, 1, 2)  # runs per candidate in each rung (scores are their mean)
SPREAD = 4  # peaks spaced geometrically between the valley and the minimum of the curve
MERGE_RATIO = 1.25  # peaks closer than this factor are one candidate
EVALS_PER_RUNG = 4  # validation points per run (the last one and earlier ones)


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
    steps_per_epoch: float | None = None,
    decay_rate: float = 0.97,
    init_fn: Callable[[jax.Array], Any] | None = None,
    key: jax.Array | int | None = None,
    range_test_steps: int = 100,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    val_batch_size: int | None = None,
    has_aux: bool = False,
    takes_rng: bool = False,
    strategy: str = "auto",
    shard_lanes: bool | None = None,
    max_memory: float | None = None,
    progress: bool | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> ScheduleChoice:
    r"""Picks a learning-rate schedule that wins, by racing the range test's candidates.

    1. **Range test** (one lane per ``grid`` point): the curve proposes a
       bracket of peak learning rates: every suggestion method's pick, the
       ``minimum / 10`` rule and a geometric spread between the valley and the
       lowest loss.
    2. **Candidates**: every peak times every schedule kind (``"one_cycle"``
       with cyclical momentum when the optimizer has a ``momentum``/``b1``
       default, and ``"decay"``: constant with a ``decay_rate`` per-epoch
       decay), times every grid point.
    3. **Race** (successive halving): every candidate trains as a lane of one
       compiled program with its schedule scaled to a short budget and is scored
       on ``val_data``; the best third continues on a three times longer
       budget, from scratch, and the last rung trains the finalists for the full
       ``total_steps`` with two seeds. The best of the last rung wins.

    **The score** (higher is better): ``val_metric`` after the run's last step
    when given (e.g. accuracy), else minus the lowest validation loss seen
    during the run: a validation loss that rises late from overconfidence
    while the predictions still improve then does not push the choice towards
    small learning rates.

    **Cost.** The race trains about ``n/9 + (n/3)/3 + 2 (n/9)`` full-length
    runs for ``n`` candidates (about 2 full runs per 9 candidates with the
    default rungs): with the default bracket (5-10 peaks, 2 kinds) a few to ten
    runs of ``total_steps``, all lanes of a few compiled programs. The cost of
    each stage is recorded in the result (``rungs``, ``seconds``) and printed
    with ``progress``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> loss`` (the protocol of
        :func:`clrjax.range_test`: ``has_aux``, ``takes_rng``).
      params: initial parameters, or ``None`` with ``init_fn``.
      data: training data, a pytree of arrays sharing a leading example axis.
      val_data: validation data shaped like ``data`` (never trained on).
      total_steps: the training budget the schedule is for (>= 2).
      batch_size: examples per step.
      optimizer: a factory ``(learning_rate, **hparams) -> GradientTransformation``
        (default :func:`clrjax.pytorch_sgd`).
      grid: ``{name: values}`` of optimizer arguments raced as well (e.g.
        ``{"weight_decay": [0, 5e-4]}``: Smith's recipe searches it this way).
      val_metric: ``val_metric(params, batch) -> scalar``, higher is better
        (e.g. accuracy); without it the score comes from the validation loss.
      kinds: the schedule kinds raced, a subset of ``("one_cycle", "decay")``.
      steps_per_epoch: steps between two decays of ``"decay"`` (default: the
        steps of one pass over ``data``).
      decay_rate: the ``"decay"`` factor per epoch (0.97, the seed recipe's).
      init_fn: ``init_fn(key) -> params``: each seed of the race draws its own.
      key: a PRNG key or an int seed (default 0).
      range_test_steps: steps of the range test.
      start_lr: the range test's first learning rate.
      end_lr: the range test's last learning rate.
      val_batch_size: validation batch size (default: all at once).
      has_aux: ``loss_fn`` returns ``(loss, aux)``.
      takes_rng: ``loss_fn`` takes a PRNG key last.
      strategy: how lanes share the machine (see :func:`clrjax.range_test`).
      shard_lanes: split lanes over all devices (``None``: when there are several).
      max_memory: bytes the lanes may use per device.
      progress: print each stage's cost on stderr; ``None``: when stderr is a terminal.
      mesh: a ``jax.sharding.Mesh`` with the axes ``("lanes", "data")`` for the
        range test and the race (see :func:`clrjax.range_test`).

    Returns:
      The :class:`clrjax.ScheduleChoice`.

    Raises:
      ValueError, TypeError: for invalid arguments, naming the argument.

    Examples:
      >>> import jax, jax.numpy as jnp, clrjax
      >>> x = jax.random.normal(jax.random.key(0), (512, 3))
      >>> y = x @ jnp.array([1.0, -2.0, 0.5])
      >>> def loss_fn(w, batch):
      ...     return jnp.mean((batch[0] @ w - batch[1]) ** 2)
      >>> choice = clrjax.find_schedule(loss_fn, jnp.zeros(3), (x[:384], y[:384]),
      ...                               val_data=(x[384:], y[384:]), total_steps=90,
      ...                               batch_size=32, range_test_steps=50, start_lr=1e-4)
      >>> print(choice.kind in ("one_cycle", "decay"), 1e-4 < choice.learning_rate < 10)
      True True
      >>> sgd = choice.optimizer()  # clrjax.pytorch_sgd with the chosen schedules
    """
    begin = time.perf_counter()
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
    num.check_count("total_steps", total_steps, minimum=2)
    num.check_count("batch_size", batch_size)
    if val_data is None:
        raise ValueError("val_data is required: the race scores candidates on held-out data")
    if val_metric is not None and not callable(val_metric):
        raise TypeError(f"val_metric must be callable, got {val_metric!r}")
    kinds = tuple(kinds) if not isinstance(kinds, str) else (kinds,)
    if not kinds:
        raise ValueError("kinds must name at least one schedule kind")
    for kind in kinds:
        num.check_choice("kinds", kind, KINDS)
    num.check_open_interval("decay_rate", decay_rate, 0.0, 1.0 + 1e-12)
    if is_batch_stream(data):
        raise TypeError("data must be a pytree of arrays (the race draws its own batches)")
    num_examples = example_count(data)
    if steps_per_epoch is None:
        steps_per_epoch = max(1, num_examples // batch_size)
    num.check_positive("steps_per_epoch", steps_per_epoch)
    if params is None and init_fn is None:
        raise ValueError("params must be given unless init_fn is")
    params_shape = params if init_fn is None else jax.eval_shape(init_fn, jax.random.key(0))
    check_params("params" if init_fn is None else "init_fn(key)", params_shape)
    optimizer = pytorch_sgd if optimizer is None else optimizer
    if isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
        raise TypeError(
            "optimizer must be a factory (learning_rate, **hparams) -> GradientTransformation, "
            f"e.g. optax.adamw, got {optimizer!r}"
        )
    lanes = _grid.expand_grid(grid, None)
    check_factory(optimizer, lanes.optimizer_names)
    moment, base_momentum = momentum_default(optimizer)
    like = jax.tree.map(lambda a: np.asarray(a)[:1], data)
    val = validation_batches(val_data, val_batch_size, like)
    if progress is None:
        progress = sys.stderr.isatty()
    key = _grid.as_key(key)
    report = _reporter(progress)

    # 1. the range test: one lane per grid point
    curve = range_test(
        loss_fn,
        params,
        data,
        batch_size=batch_size,
        num_steps=range_test_steps,
        start_lr=start_lr,
        end_lr=end_lr,
        optimizer=optimizer,
        grid=grid,
        init_fn=init_fn,
        key=key,
        has_aux=has_aux,
        takes_rng=takes_rng,
        strategy=strategy,
        shard_lanes=shard_lanes,
        max_memory=max_memory,
        progress=False,
        mesh=mesh,
    )
    report(f"range test: {curve.num_lanes} lanes x {range_test_steps} steps", begin)

    # 2. candidates: peaks of every grid point's curve x kinds
    candidates: list[Candidate] = []
    for lane in range(curve.num_lanes):
        hparams = {k: float(v) for k, v in curve.lane_hparams(lane).items()}
        smoothed = _recorded(curve, lane)
        for peak, source in peak_bracket(
            curve.lrs, smoothed, spread=SPREAD, merge_ratio=MERGE_RATIO
        ):
            candidates.extend(Candidate(kind, peak, hparams, source) for kind in kinds)
    if not candidates:
        raise ValueError(
            "the range test gave no usable curve (every lane diverged at once or gave NaN); "
            "check start_lr and the loss"
        )

    # 3. the race
    task = LossTask(
        loss_fn=loss_fn,
        optimizer=optimizer,
        val_loss_fn=loss_fn,
        val_metric=val_metric,
        has_aux=bool(has_aux),
        takes_rng=bool(takes_rng),
        init_fn=init_fn,
    )
    request = _engine.Request(
        strategy=strategy, shard=shard_lanes, mesh=mesh, max_memory=max_memory
    )
    budgets = [max(2, round(total_steps * f)) for f in RUNG_FRACTIONS]
    race_key = jax.random.fold_in(key, 1)

    def train(indices: np.ndarray, num_steps: int, num_seeds: int) -> tuple[np.ndarray, str]:
        chosen = [candidates[i] for i in indices]
        lanes_of = [c for c in chosen for _ in range(num_seeds)]
        scale = num_steps / total_steps  # a shorter run keeps the decay's total
        lrs, moms = schedule_arrays(
            lanes_of,
            num_steps,
            steps_per_epoch=steps_per_epoch * scale,
            decay_rate=decay_rate,
            momentum=base_momentum if moment else None,
        )
        schedules = {"learning_rate": lrs}
        if moms is not None:
            schedules[moment] = moms
        constants = {
            name: np.array([c.hparams[name] for c in lanes_of], num.float_dtype())
            for name in lanes.optimizer_names
        }
        evals = np.unique(np.linspace(0, num_steps - 1, EVALS_PER_RUNG + 1)[1:].round().astype(int))
        start = time.perf_counter()
        trained = train_lanes(
            task,
            (params, None),
            data,
            num_steps=num_steps,
            batch_size=batch_size,
            schedules=schedules,
            constants=constants,
            seeds=np.tile(np.arange(num_seeds), len(chosen)),
            key=race_key,
            val=val,
            eval_steps=evals,
            request=request,
        )
        scores = _score(trained.scores, val_metric is not None).reshape(len(chosen), num_seeds)
        report(
            f"race rung: {len(chosen)} candidates x {num_seeds} seeds x {num_steps} steps "
            f"({trained.strategy})",
            start,
        )
        return scores, trained.strategy

    keep = rung_sizes(len(candidates), len(budgets), ETA)
    rungs = successive_halving(train, len(candidates), budgets, keep, RUNG_SEEDS)
    last = rungs[-1]
    winner = candidates[int(last.candidates[int(np.argmax(last.mean_scores))])]
    seconds = time.perf_counter() - begin
    report(f"find_schedule: {len(candidates)} candidates, winner {winner.label()}", begin)
    return ScheduleChoice(
        kind=winner.kind,
        learning_rate=winner.peak,
        hparams=winner.hparams,
        total_steps=total_steps,
        steps_per_epoch=float(steps_per_epoch),
        decay_rate=float(decay_rate),
        momentum_name=moment,
        base_momentum=base_momentum,
        candidates=tuple(candidates),
        rungs=tuple(rungs),
        score="validation metric" if val_metric is not None else "-min validation loss",
        range_test=curve,
        seconds=seconds,
        factory=optimizer,
    )


def _recorded(curve: Any, lane: int) -> np.ndarray:
    """The lane's smoothed curve up to where it stopped (NaN after)."""
    smoothed = np.array(curve.smoothed[lane])
    d = int(curve.diverged_at[lane])
    if d >= 0:
        smoothed[d + 1 :] = np.nan
    return smoothed


def _score(scores: Mapping[str, np.ndarray], has_metric: bool) -> np.ndarray:
    """``(lanes,)`` score of each lane (higher is better; NaN for a failed run)."""
    if has_metric:
        return scores["metric"][:, -1]
    loss = np.where(np.isfinite(scores["loss"]), scores["loss"], np.inf)
    best = loss.min(axis=1)
    return np.where(np.isfinite(best) & np.isfinite(scores["loss"][:, -1]), -best, np.nan)


def _reporter(enabled: bool) -> Callable[[str, float], None]:
    def report(what: str, since: float) -> None:
        if enabled:
            print(f"{what}: {time.perf_counter() - since:.1f} s", file=sys.stderr)

    return report
