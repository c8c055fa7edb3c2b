"""The comparison's training: find_schedule on the race split, then every arm
as lanes of one program (:func:`run_comparison`).

The protocol:

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
from clrjax._candidates import MIN_RANGE_TEST_STEPS, Candidate, schedule_arrays
from clrjax._loss_task import LossTask
from clrjax._training import train_lanes
from clrjax.demo import _data as _demo_data
from clrjax.demo._comparison._statistics import epochs_to_reach
from clrjax.demo._comparison._tasks import ARM_KINDS, TASKS, Arm, DemoTask, demo_problem

RACE_FRACTION = 0.8  # find_schedule trains on this part of the training split
FIRST_SEED = 100  # the arms' seeds are FIRST_SEED, FIRST_SEED + 1, ...


class FindScheduleFailed(RuntimeError):
    """find_schedule could not choose (e.g. its range test gave no suggestion)."""


def nesterov_sgd(learning_rate: Any, momentum: Any = 0.9) -> optax.GradientTransformation:
    """The arms' optimizer as a factory: ``optax.sgd`` with Nesterov momentum.

    ``momentum`` has a numeric default, so find_schedule's one-cycle cycles it.
    """
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


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
        val=_engine.validation_batches((data.x_test, data.y_test), None),
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
    counts = {
        "seeds": (seeds, 1),
        "epochs": (epochs, 1),
        "batch_size": (batch_size, 1),
        "range_test_steps": (range_test_steps, MIN_RANGE_TEST_STEPS),
    }
    for name, (value, least) in counts.items():
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
