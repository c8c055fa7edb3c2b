"""Does :func:`clrjax.find_schedule` pay off? A training comparison on the offline demo datasets.

Used by ``clrjax train-demo`` and ``examples/seed_claim.py``. The protocol:

1. :func:`clrjax.find_schedule` runs on the first 80% of the training split
   and scores its race by accuracy on the last 20% (the test split is never
   seen), for the full budget (``epochs`` epochs of the whole training split);
2. every arm then trains on the whole training split with fresh seeds (100,
   101, ...; neither the range test nor the race used them) and is scored by
   its accuracy on the test split after every epoch.

Arms, all SGD with Nesterov momentum 0.9:

* ``baseline``: a common default constant learning rate (0.01);
* ``minimum``: the default suggestion, the log-median over the seed lanes of
  the ``"minimum"`` pick of find_schedule's own range test
  (``choice.range_test.suggest_spread("minimum")``), held constant;
* ``minimum + decay``: the same learning rate times 0.97 after every epoch;
* ``find_schedule``: the schedule find_schedule returned (``choice.schedule``
  and ``choice.momentum``: one-cycle with cyclical momentum, or a per-epoch
  decay), trained for the full budget;
* the task's hand-picked arms (a schedule kind and a learning rate each).

Every (arm, seed) pair is a lane of the lane engine, trained by the same
trainer as find_schedule's race (``clrjax._training.train_lanes``): each
lane's learning rate and momentum are given per step, its seed fixes its
initial weights and data order (the same for every arm, so arms compare seed
by seed), and it is scored on the test split at the end of every epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

import clrjax
from clrjax import _engine
from clrjax._candidates import Candidate, schedule_arrays
from clrjax._engine.feeding import validation_batches
from clrjax._loss_task import LossTask
from clrjax._training import train_lanes
from clrjax.demo import _data as _demo_data

ARM_KINDS = ("constant", "decay", "one_cycle")
RACE_FRACTION = 0.8  # find_schedule trains on this part of the training split
FIRST_SEED = 100  # the arms' seeds are FIRST_SEED, FIRST_SEED + 1, ...
SE_RULE = 2.0  # a paired difference is real when its mean exceeds this many standard errors


class DemoTask(NamedTuple):
    """A model and training budget on one of the demo datasets.

    Attributes:
      name: the task's name (a key of :data:`TASKS`).
      dataset: one of :data:`clrjax.demo.DATASETS`.
      hidden: hidden layer widths of the ReLU MLP.
      batch_size: examples per step.
      epochs: epochs of the whole training split (the budget).
      hand_picked: ``(kind, learning rate)`` arms trained beside the others.
    """

    name: str
    dataset: str
    hidden: tuple[int, ...]
    batch_size: int
    epochs: int
    hand_picked: tuple[tuple[str, float], ...] = ()


TASKS = {
    "digits": DemoTask("digits", "digits", (64,), 32, 30, (("decay", 0.1),)),
    # The task; the hand-picked grid surrounds the best cells of a wider one.
    "mnist1d": DemoTask(
        "mnist1d",
        "mnist1d",
        (256, 256),
        128,
        60,
        (
            ("constant", 0.1),
            ("decay", 0.2),
            ("decay", 0.3),
            ("decay", 0.4),
            ("one_cycle", 0.2),
            ("one_cycle", 0.4),
        ),
    ),
    # Held out: nothing in find_schedule was tuned on it.
    "mnist1d_w128": DemoTask(
        "mnist1d_w128", "mnist1d", (128, 128), 64, 40, (("decay", 0.1), ("one_cycle", 0.2))
    ),
}


class Arm(NamedTuple):
    """One training configuration.

    Attributes:
      name: e.g. ``"baseline"``, ``"minimum + decay"``, ``"hand-picked decay 0.3"``.
      kind: one of :data:`ARM_KINDS`.
      lr: the constant, initial (decay) or peak (one-cycle) learning rate.
      source: ``"baseline"``, ``"suggestion"``, ``"find_schedule"`` or ``"hand-picked"``.
    """

    name: str
    kind: str
    lr: float
    source: str


class FindScheduleFailed(RuntimeError):
    """find_schedule could not choose (e.g. its range test gave no suggestion)."""


def nesterov_sgd(learning_rate: Any, momentum: Any = 0.9) -> optax.GradientTransformation:
    """The arms' optimizer as a factory: ``optax.sgd`` with Nesterov momentum.

    ``momentum`` has a numeric default, so find_schedule's one-cycle cycles it.
    """
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


def demo_problem(
    dataset: str, hidden: Sequence[int], data_seed: int = 0
) -> tuple[_demo_data.Dataset, Callable[[jax.Array], Any], tuple[int, ...]]:
    """The dataset, ``init_fn(key) -> MLP params`` and the MLP's layer widths."""
    data = _demo_data.load_dataset(dataset, seed=data_seed)
    sizes = (data.x_train.shape[1], *hidden, data.num_classes)
    return data, functools.partial(_demo_data.init_mlp, sizes=sizes), sizes


def race_split(data: _demo_data.Dataset) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """``(train, val)``: the first :data:`RACE_FRACTION` of the training split, and the rest."""
    cut = round(len(data.x_train) * RACE_FRACTION)
    return (data.x_train[:cut], data.y_train[:cut]), (data.x_train[cut:], data.y_train[cut:])


def find_demo_schedule(
    data: _demo_data.Dataset,
    init_fn: Callable[[jax.Array], Any],
    *,
    epochs: int,
    batch_size: int,
    momentum: float = 0.9,
    decay_rate: float = 0.97,
    key: int = 0,
    range_test_steps: int = 100,
    progress: bool | None = False,
) -> clrjax.ScheduleChoice:
    """:func:`clrjax.find_schedule` as the comparison runs it.

    On :func:`race_split` of the training split, accuracy as the metric, for
    ``epochs`` epochs of the whole training split (``total_steps`` and
    ``steps_per_epoch``), Nesterov SGD with ``momentum``.
    """
    race_train, race_val = race_split(data)
    per_epoch = len(data.x_train) // batch_size
    return clrjax.find_schedule(
        _demo_data.mlp_loss,
        None,
        race_train,
        val_data=race_val,
        val_metric=_demo_data.mlp_accuracy,
        total_steps=epochs * per_epoch,
        batch_size=batch_size,
        optimizer=functools.partial(nesterov_sgd, momentum=momentum),
        key=key,
        model=clrjax.Model(init_fn=init_fn),
        search=clrjax.Search(
            steps_per_epoch=per_epoch, decay_rate=decay_rate, range_test_steps=range_test_steps
        ),
        execution=clrjax.Execution(progress=progress),
    )


def arm_schedules(
    arms: Sequence[Arm],
    num_steps: int,
    *,
    steps_per_epoch: int,
    decay_rate: float,
    momentum: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(num_steps, arms)`` learning rates and momenta of every arm.

    ``"decay"`` and ``"one_cycle"`` are :func:`clrjax._candidates.kind_schedules`
    (what :attr:`clrjax.ScheduleChoice.schedule` is built with), ``"constant"``
    is its decay with a rate of 1.

    Examples:
      >>> lr, mom = arm_schedules([Arm("a", "constant", 0.1, "x"), Arm("b", "decay", 0.1, "x")],
      ...                         4, steps_per_epoch=2, decay_rate=0.5, momentum=0.9)
      >>> print(lr.round(3).T.tolist(), mom[0].round(3).tolist())
      [[0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.05, 0.05]] [0.9, 0.9]
    """
    lrs = np.empty((num_steps, len(arms)), np.float32)
    moms = np.empty_like(lrs)
    for constant in (True, False):
        which = [i for i, arm in enumerate(arms) if (arm.kind == "constant") == constant]
        if not which:
            continue
        lr, mom = schedule_arrays(
            [Candidate("decay" if constant else arms[i].kind, arms[i].lr, {}, "") for i in which],
            num_steps,
            steps_per_epoch=steps_per_epoch,
            decay_rate=1.0 if constant else decay_rate,
            momentum=momentum,
        )
        lrs[:, which], moms[:, which] = lr, mom
    return lrs, moms


class Training(NamedTuple):
    """What :func:`train_arms` measured.

    Attributes:
      test_acc: ``(arms, seeds, epochs)`` test accuracy after every epoch (0
        after a run's loss turned NaN/Inf).
      train_loss: ``(arms, seeds, epochs)`` mean training loss of every epoch.
      diverged: ``(arms, seeds)`` the run's loss turned NaN/Inf.
      seconds: wall time (compile included).
      cpu_seconds: CPU time of the process meanwhile (all threads).
      strategy: how the engine ran the lanes.
    """

    test_acc: np.ndarray
    train_loss: np.ndarray
    diverged: np.ndarray
    seconds: float
    cpu_seconds: float
    strategy: str


def train_arms(
    arms: Sequence[Arm],
    seeds: Sequence[int],
    data: _demo_data.Dataset,
    init_fn: Callable[[jax.Array], Any],
    *,
    epochs: int,
    batch_size: int,
    decay_rate: float = 0.97,
    momentum: float = 0.9,
    key: jax.Array | None = None,
) -> Training:
    """Trains every ``(arm, seed)`` as a lane of one program on the lane engine.

    Each lane runs :func:`nesterov_sgd` for ``epochs`` epochs of
    ``len(x_train) // batch_size`` steps (the engine draws each seed's data
    order, a new permutation every epoch; the remainder is dropped) from
    ``init_fn(fold_in(key, seed))``, its learning rate and momentum following
    :func:`arm_schedules`, and is scored on the test split after every epoch.

    Args:
      arms: the arms.
      seeds: integer seeds; every arm trains once with each.
      data: the dataset.
      init_fn: ``init_fn(key) -> params``.
      epochs: epochs of the training split.
      batch_size: examples per step.
      decay_rate: per-epoch factor of the ``"decay"`` arms.
      momentum: Nesterov momentum (one-cycle arms cycle it 0.95 -> 0.85 -> 0.95).
      key: the base PRNG key (default ``jax.random.key(0)``).

    Returns:
      The :class:`Training`.

    Raises:
      ValueError: if ``batch_size`` exceeds the training split.
    """
    num_examples = len(data.x_train)
    if not 1 <= batch_size <= num_examples:
        raise ValueError(f"batch_size must be in [1, {num_examples}]; got {batch_size}")
    per_epoch = num_examples // batch_size
    num_steps = epochs * per_epoch
    lrs, moms = arm_schedules(
        arms, num_steps, steps_per_epoch=per_epoch, decay_rate=decay_rate, momentum=momentum
    )
    n = len(seeds)
    task = LossTask(
        loss_fn=_demo_data.mlp_loss,
        optimizer=nesterov_sgd,
        val_loss_fn=_demo_data.mlp_loss,
        val_metric=_demo_data.mlp_accuracy,
        init_fn=init_fn,
    )
    begin, cpu_begin = time.perf_counter(), time.process_time()
    trained = train_lanes(
        task,
        (None, None),
        (data.x_train, data.y_train),
        num_steps=num_steps,
        batch_size=batch_size,
        schedules={"learning_rate": np.repeat(lrs, n, axis=1), "momentum": np.repeat(moms, n, 1)},
        constants={},
        seeds=np.tile(np.asarray(seeds), len(arms)),
        key=jax.random.key(0) if key is None else key,
        val=validation_batches((data.x_test, data.y_test), None),
        eval_steps=np.arange(per_epoch - 1, num_steps, per_epoch),
        request=_engine.Request(chunk_size=per_epoch),
    )
    seconds, cpu_seconds = time.perf_counter() - begin, time.process_time() - cpu_begin
    shape = (len(arms), n, epochs)
    acc = trained.scores["metric"].reshape(shape)
    return Training(
        test_acc=np.where(np.isfinite(acc), acc, 0.0),
        train_loss=trained.losses.reshape(*shape, per_epoch).mean(axis=-1),
        diverged=(trained.diverged_at >= 0).reshape(shape[:2]),
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        strategy=trained.strategy,
    )


@dataclasses.dataclass(frozen=True)
class ComparisonResult:
    """Outcome of :func:`run_comparison`; arrays are NumPy.

    Attributes:
      task: the :class:`DemoTask` trained (with the budget actually used).
      arms: the arms, in the order of the arrays' first axis; the first is the baseline.
      seeds: ``(seeds,)`` the training seeds.
      test_acc: ``(arms, seeds, epochs)`` test accuracy after each epoch (a
        run whose loss turned NaN/Inf counts as 0 from then on).
      train_loss: ``(arms, seeds, epochs)`` mean training loss of each epoch.
      diverged: ``(arms, seeds)`` the run's loss turned NaN/Inf.
      choice: what find_schedule returned.
      suggestion: the suggestion arms' learning rate (NaN: no lane gave one).
      settings: every setting needed to rerun the comparison.
      find_seconds: wall time of find_schedule (compiles included).
      find_cpu_seconds: its CPU time (all threads).
      winner_seconds: wall time of training the find_schedule arm's seeds as
        one program for the full budget (compile included).
      winner_cpu_seconds: its CPU time.
      train_seconds: wall time of training the other arms (one program).
    """

    task: DemoTask
    arms: tuple[Arm, ...]
    seeds: np.ndarray
    test_acc: np.ndarray
    train_loss: np.ndarray
    diverged: np.ndarray
    choice: clrjax.ScheduleChoice
    suggestion: float
    settings: dict[str, Any]
    find_seconds: float
    find_cpu_seconds: float
    winner_seconds: float
    winner_cpu_seconds: float
    train_seconds: float

    @property
    def arm_names(self) -> tuple[str, ...]:
        """The arms' names."""
        return tuple(arm.name for arm in self.arms)

    def index(self, name: str) -> int:
        """The position of the arm called ``name``."""
        return self.arm_names.index(name)

    @property
    def final(self) -> np.ndarray:
        """``(arms, seeds)`` final test accuracy in percent."""
        return self.test_acc[:, :, -1] * 100.0

    @property
    def target(self) -> np.ndarray:
        """``(seeds,)`` the baseline's final test accuracy for each seed (a fraction)."""
        return self.test_acc[0, :, -1]

    @property
    def epochs_to_target(self) -> np.ndarray:
        """``(arms, seeds)`` first epoch (1-based) reaching :attr:`target`, or -1."""
        return epochs_to_reach(self.test_acc, self.target[None, :])

    def best_hand_picked(self) -> int | None:
        """The index of the hand-picked arm with the highest mean final accuracy, or None."""
        picked = [i for i, arm in enumerate(self.arms) if arm.source == "hand-picked"]
        if not picked:
            return None
        return max(picked, key=lambda i: self.final[i].mean())


def epochs_to_reach(acc: np.ndarray, target: np.ndarray) -> np.ndarray:
    """First 1-based epoch at which ``acc[..., epoch] >= target``, or -1 for never.

    Args:
      acc: accuracies with epochs on the last axis.
      target: thresholds broadcastable against ``acc[..., 0]``.

    Returns:
      Integer array of shape ``acc.shape[:-1]``.

    Examples:
      >>> acc = np.array([[0.5, 0.8, 0.9], [0.1, 0.2, 0.3]])
      >>> print(epochs_to_reach(acc, np.array([0.8, 0.8])).tolist())
      [2, -1]
    """
    acc = np.asarray(acc)
    reached = acc >= np.asarray(target)[..., None]
    return np.where(reached.any(axis=-1), reached.argmax(axis=-1) + 1, -1)


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the per-seed differences ``a - b``.

    Examples:
      >>> print(paired(np.array([3.0, 4.0, 5.0]), np.array([1.0, 1.0, 1.0])))
      (3.0, 0.5773502691896258)
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    se = float(np.std(d, ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(np.mean(d)), se


def holds(mean: float, se: float) -> bool | None:
    """True / False when ``mean`` is above / below ``SE_RULE`` standard errors, else None.

    Examples:
      >>> print(holds(1.0, 0.2), holds(-1.0, 0.2), holds(0.3, 0.2), holds(1.0, float("nan")))
      True False None None
    """
    if not np.isfinite(se):
        return None
    if mean > SE_RULE * se:
        return True
    if mean < -SE_RULE * se:
        return False
    return None


def outcome(mean: float, se: float, better: str = "better", worse: str = "worse") -> str:
    """``better``, ``worse`` or ``"no clear difference"``: a paired difference by :func:`holds`."""
    return {True: better, False: worse, None: "no clear difference"}[holds(mean, se)]


def schedule_text(arm: Arm) -> str:
    """E.g. ``"one-cycle, peak 0.38"`` or ``"0.3, x0.97 per epoch"``."""
    if arm.kind == "one_cycle":
        return f"one-cycle, peak {arm.lr:.3g}"
    if arm.kind == "decay":
        return f"{arm.lr:.3g}, decayed per epoch"
    return f"{arm.lr:.3g}, constant"


def verdict(result: ComparisonResult) -> str:
    """One line: does find_schedule's schedule end above the baseline (paired over seeds)?

    Examples:
      >>> import types
      >>> arms = (Arm("baseline", "constant", 0.01, "baseline"),
      ...         Arm("find_schedule", "decay", 0.3, "find_schedule"))
      >>> fake = types.SimpleNamespace(arms=arms, final=np.array([[60.0, 61, 62], [72, 71, 73]]),
      ...                              arm_names=("baseline", "find_schedule"))
      >>> print(verdict(fake))  # doctest: +NORMALIZE_WHITESPACE
      verdict: find_schedule (0.3, decayed per epoch) ends at 72.0% vs the baseline's 61.0%
      (constant 0.01): +11.00 ± 0.58 points over 3 seeds (paired): better.
    """
    final = result.final
    base, found = 0, result.arm_names.index("find_schedule")
    mean, se = paired(final[found], final[base])
    return (
        f"verdict: find_schedule ({schedule_text(result.arms[found])}) ends at "
        f"{final[found].mean():.1f}% vs the baseline's {final[base].mean():.1f}% "
        f"(constant {result.arms[base].lr:g}): {mean:+.2f} ± {se:.2f} points over "
        f"{final.shape[1]} seeds (paired): {outcome(mean, se)}."
    )


def _mean_std(values: np.ndarray, digits: int = 1) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def format_table(result: ComparisonResult) -> str:
    """A Markdown table: per arm its schedule, final accuracy, the gain over the baseline, speed.

    Accuracies are mean ± std over seeds; the gain is paired over seeds (mean ±
    standard error, and its verdict by :func:`holds`); *epochs to the
    baseline's final accuracy* counts, per seed, the first epoch reaching the
    baseline's final accuracy with that seed (mean ± std over the seeds that
    reach it).
    """
    final = result.final
    seeds = final.shape[1]
    reached = result.epochs_to_target
    lines = [
        "| arm | schedule | final test acc. (%) | vs baseline (points, paired) | "
        "epochs to baseline's final acc. | best epoch acc. (%) |",
        "|---|---|---|---|---|---|",
    ]
    for i, arm in enumerate(result.arms):
        hit = reached[i][reached[i] > 0]
        speed = (_mean_std(hit) if hit.size else "-") + (
            f" (never on {seeds - hit.size}/{seeds})" if hit.size < seeds else ""
        )
        gain = (
            "-"
            if i == 0
            else "{:+.2f} ± {:.2f} ({})".format(
                *paired(final[i], final[0]), outcome(*paired(final[i], final[0]), "higher", "lower")
            )
        )
        broke = int(result.diverged[i].sum())
        note = f" ({broke}/{seeds} diverged, counted as 0)" if broke else ""
        lines.append(
            f"| {arm.name} | {schedule_text(arm)} | {_mean_std(final[i])}{note} | {gain} | "
            f"{speed} | {_mean_std(result.test_acc[i].max(axis=-1) * 100.0)} |"
        )
    return "\n".join(lines)


def format_race(choice: clrjax.ScheduleChoice) -> str:
    """A Markdown table of find_schedule's race: each candidate's mean score per rung."""
    table = choice.candidate_scores()
    header = " | ".join(f"rung {j + 1}: {r.num_steps} steps" for j, r in enumerate(choice.rungs))
    lines = [
        f"| candidate | nearest suggestions | {header} |",
        "|---|---|" + "---|" * len(choice.rungs),
    ]
    for i, cand in enumerate(choice.candidates):
        cells = " | ".join("-" if np.isnan(v) else f"{100.0 * v:.1f}" for v in table[i])
        name = f"**{cand.label()}** (winner)" if i == choice.winner else cand.label()
        lines.append(f"| {name} | {cand.source or '-'} | {cells} |")
    return "\n".join(lines)


def run_comparison(
    task: str = "digits",
    *,
    seeds: int = 5,
    epochs: int | None = None,
    batch_size: int | None = None,
    hidden: Sequence[int] | None = None,
    baseline_lr: float = 0.01,
    method: str = "minimum",
    decay_arm: bool = True,
    hand_picked: Sequence[tuple[str, float]] | None = None,
    decay_rate: float = 0.97,
    momentum: float = 0.9,
    range_test_steps: int = 100,
    key: int = 0,
    data_seed: int = 0,
    progress: bool | None = None,
) -> ComparisonResult:
    """find_schedule on the race split, then every arm on the full training split (module doc).

    Args:
      task: a key of :data:`TASKS` (model, batch size, epochs, hand-picked arms).
      seeds: runs per arm, seeds ``FIRST_SEED, FIRST_SEED + 1, ...``.
      epochs: training epochs (the task's when None).
      batch_size: examples per step (the task's when None).
      hidden: hidden layer widths of the MLP (the task's when None).
      baseline_lr: the baseline's constant learning rate.
      method: the suggestion method of the suggestion arms (a name in
        :data:`clrjax.SUGGESTION_METHODS`).
      decay_arm: train the suggestion with a per-epoch decay too.
      hand_picked: ``(kind, learning rate)`` arms (the task's when None).
      decay_rate: per-epoch factor of every decay schedule (find_schedule's too).
      momentum: Nesterov momentum of every arm (one-cycle cycles it).
      range_test_steps: steps of find_schedule's range test.
      key: find_schedule's seed.
      data_seed: seed of the train/test split (digits) or generator (mnist1d).
      progress: print find_schedule's stages on stderr (None: when a terminal).

    Returns:
      A :class:`ComparisonResult`.

    Raises:
      ValueError: for an unknown task, method or kind, or a bad count or batch size.
      FindScheduleFailed: when find_schedule cannot choose.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}; got {task!r}")
    counts = {"seeds": (seeds, 1), "epochs": (epochs, 1), "batch_size": (batch_size, 1)}
    for name, (value, least) in {**counts, "range_test_steps": (range_test_steps, 2)}.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < least
        ):
            raise ValueError(f"{name} must be an int >= {least}; got {value!r}")
    if method not in clrjax.SUGGESTION_METHODS:
        raise ValueError(f"method must be one of {clrjax.SUGGESTION_METHODS}; got {method!r}")
    spec = TASKS[task]
    spec = spec._replace(
        epochs=spec.epochs if epochs is None else epochs,
        batch_size=spec.batch_size if batch_size is None else batch_size,
        hidden=spec.hidden if hidden is None else tuple(hidden),
        hand_picked=spec.hand_picked if hand_picked is None else tuple(hand_picked),
    )
    for kind, _ in spec.hand_picked:
        if kind not in ARM_KINDS:
            raise ValueError(f"hand_picked kinds must be in {ARM_KINDS}; got {kind!r}")
    data, init_fn, sizes = demo_problem(spec.dataset, spec.hidden, data_seed)
    race_train, race_val = race_split(data)
    if spec.batch_size > len(race_val[0]):
        raise ValueError(
            f"batch_size must be at most {len(race_val[0])} (the race's validation part, "
            f"{1 - RACE_FRACTION:.0%} of the training split); got {spec.batch_size}"
        )
    per_epoch = len(data.x_train) // spec.batch_size
    begin, cpu_begin = time.perf_counter(), time.process_time()
    try:
        choice = find_demo_schedule(
            data,
            init_fn,
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            momentum=momentum,
            decay_rate=decay_rate,
            key=key,
            range_test_steps=range_test_steps,
            progress=progress,
        )
    except ValueError as e:  # every option was checked above: the run itself failed
        raise FindScheduleFailed(f"find_schedule failed: {e}") from e
    find_seconds, find_cpu = time.perf_counter() - begin, time.process_time() - cpu_begin

    suggestion = float(choice.range_test.suggest_spread(method)[0][1].median)
    arms = [Arm("baseline", "constant", float(baseline_lr), "baseline")]
    if np.isfinite(suggestion):
        arms.append(Arm(method, "constant", suggestion, "suggestion"))
        if decay_arm:
            arms.append(Arm(f"{method} + decay", "decay", suggestion, "suggestion"))
    found = len(arms)
    arms.append(Arm("find_schedule", choice.kind, float(choice.learning_rate), "find_schedule"))
    arms += [
        Arm(f"hand-picked {kind} {lr:g}", kind, float(lr), "hand-picked")
        for kind, lr in spec.hand_picked
    ]
    seed_list = list(range(FIRST_SEED, FIRST_SEED + seeds))
    train = functools.partial(
        train_arms,
        seeds=seed_list,
        data=data,
        init_fn=init_fn,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        decay_rate=decay_rate,
        momentum=momentum,
    )
    # The winner trains alone first: its time is what 5 seeds of one schedule cost.
    winner = train(arms[found : found + 1])
    rest = train(arms[:found] + arms[found + 1 :])

    def joined(field: str) -> np.ndarray:
        a, b = getattr(rest, field), getattr(winner, field)
        return np.concatenate([a[:found], b, a[found:]])

    settings = {
        "task": spec.name,
        "dataset": spec.dataset,
        "model": f"MLP, layer widths {sizes}, ReLU, He init",
        "train examples": len(data.x_train),
        "test examples": len(data.x_test),
        "epochs": spec.epochs,
        "batch size": spec.batch_size,
        "steps per epoch": per_epoch,
        "total steps": spec.epochs * per_epoch,
        "seeds": ", ".join(map(str, seed_list)),
        "optimizer": f"SGD, Nesterov momentum {momentum} (one-cycle: cycled 0.95 -> 0.85 -> 0.95)",
        "per-epoch decay": decay_rate,
        "find_schedule data": (
            f"first {len(race_train[0])} training examples; val_data: the last "
            f"{len(race_val[0])}, val_metric accuracy"
        ),
        "find_schedule key": key,
        "range test steps": range_test_steps,
        "suggestion method": method,
        "data seed": data_seed,
        "lane strategy": rest.strategy,
    }
    return ComparisonResult(
        task=spec,
        arms=tuple(arms),
        seeds=np.array(seed_list),
        test_acc=joined("test_acc"),
        train_loss=joined("train_loss"),
        diverged=joined("diverged"),
        choice=choice,
        suggestion=suggestion,
        settings=settings,
        find_seconds=find_seconds,
        find_cpu_seconds=find_cpu,
        winner_seconds=winner.seconds,
        winner_cpu_seconds=winner.cpu_seconds,
        train_seconds=rest.seconds,
    )


def default_plot_arms(result: ComparisonResult) -> list[str]:
    """The arms :func:`plot_results` draws by default: all but the hand-picked, and their best."""
    names = [arm.name for arm in result.arms if arm.source != "hand-picked"]
    best = result.best_hand_picked()
    return names + ([result.arms[best].name] if best is not None else [])


def plot_results(
    result: ComparisonResult, arms: Sequence[str] | None = None, ax: Any = None
) -> Any:
    """Plots test accuracy against epoch per arm (mean over seeds, ± std band).

    Args:
      result: a :class:`ComparisonResult`.
      arms: names of the arms to draw (default :func:`default_plot_arms`).
      ax: matplotlib ``Axes`` to draw on (a new figure when None).

    Returns:
      The matplotlib ``Axes``.
    """
    from matplotlib.ticker import MaxNLocator

    from clrjax.plotting import _pyplot

    names = result.arm_names
    arms = default_plot_arms(result) if arms is None else list(arms)
    unknown = [name for name in arms if name not in names]
    if unknown:
        raise ValueError(f"arms must be names from {names}; got {unknown}")
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(6.4, 4.0))
    epochs = np.arange(1, result.test_acc.shape[-1] + 1)
    shown = [names.index(name) for name in arms]
    for i in shown:
        acc = result.test_acc[i] * 100.0
        mean, std = acc.mean(axis=0), acc.std(axis=0)
        (line,) = ax.plot(
            epochs,
            mean,
            label=f"{names[i]}: {schedule_text(result.arms[i])}",
            linewidth=2.0 if names[i] == "find_schedule" else 1.2,
        )
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.axhline(
        result.target.mean() * 100.0, color="grey", linestyle=":", label="baseline final (mean)"
    )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    seeds = result.test_acc.shape[1]
    ax.set_title(f"{result.task.name}: SGD + Nesterov, {seeds} seeds (mean ± std)")
    later = result.test_acc[shown][:, :, len(epochs) // 4 :] * 100.0
    low = min(np.percentile(later, 5), result.target.mean() * 100.0)
    ax.set_ylim(max(0.0, low - 2.0), min(100.0, later.max() + 1.0))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def comparison_figure(result: ComparisonResult) -> Any:
    """find_schedule's plot (range test and candidates, the race) beside the accuracy curves."""
    from clrjax.plotting import _pyplot

    fig, axes = _pyplot().subplots(1, 3, figsize=(18.0, 4.6))
    result.choice.plot(axes=axes[:2])
    axes[0].set_title(f"{result.task.name}: find_schedule's range test and candidates")
    axes[1].set_title(f"the race: {result.choice.score}, mean per rung")
    plot_results(result, ax=axes[2])
    fig.tight_layout()
    return fig
