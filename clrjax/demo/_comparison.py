"""Does the range test pay off? A training comparison on the offline demo datasets.

Used by ``clrjax train-demo`` and ``examples/seed_claim.py``. It reproduces the
*shape* of Leslie Smith's CIFAR-10 claim (a range-test learning rate trains to a
hand-picked rate's accuracy in fewer epochs; adding a per-epoch decay or a
one-cycle schedule ends higher) on data that needs no download.

Arms, all SGD with Nesterov momentum:

* ``baseline``: a common default constant learning rate (0.01);
* for each suggestion method ``m`` (:data:`clrjax.SUGGESTION_METHODS`) applied
  to the range test:

  * ``constant [m]``: the suggested rate, constant;
  * ``decay [m]``: the suggestion decayed by 0.97 after every epoch
    (``optax.exponential_decay(..., staircase=True)``);
  * ``one-cycle [m]``: :func:`clrjax.one_cycle_schedule` peaking at the
    suggestion, with :func:`clrjax.one_cycle_momentum_schedule`.

Every (arm, seed) pair is one lane of a single jitted, vmapped training program:
an arm is a ``(kind, peak learning rate)`` pair of arrays, so the schedules are
traced and selected per lane, and the seed fixes the initial weights and the
data order (shared by all arms of one seed, so arms are compared pairwise).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import clrjax
from clrjax import _numerics as num
from clrjax.demo import _data as _demo_data

KINDS = ("constant", "decay", "one-cycle")
_CONSTANT, _DECAY, _ONE_CYCLE = range(len(KINDS))

# Per-dataset defaults: (epochs, batch_size, hidden layer widths).
DEFAULTS = {
    "digits": (30, 32, (64,)),
    "mnist1d": (40, 64, (256, 256)),
}


class Arm(NamedTuple):
    """One training configuration: a schedule kind and its (peak) learning rate."""

    name: str
    kind: str  # one of KINDS
    lr: float
    method: str | None  # the suggestion method(s) behind ``lr``; None for the baseline


@dataclasses.dataclass(frozen=True)
class TrainDemoResult:
    """Outcome of :func:`run_train_demo`; arrays are NumPy.

    Attributes:
      dataset: dataset name.
      arms: the arms, in the order of the first axis of the arrays; the first is
        the baseline.
      test_acc: ``(arms, seeds, epochs)`` test accuracy after each epoch.
      train_loss: ``(arms, seeds, epochs)`` mean training loss of each epoch.
      suggestions: ``{method: learning rate}``, the log-median over the seed lanes
        of the range test (:func:`clrjax.suggest_spread`), or ``{"given": lr}``.
      lane_suggestions: ``{method: (seeds,) array}``, each range-test lane's pick.
      settings: every setting needed to rerun the comparison.
      train_seconds: wall time of the training program (compile included).
      range_test: the range test behind ``suggestions`` (None when ``lr`` was given).
    """

    dataset: str
    arms: tuple[Arm, ...]
    test_acc: np.ndarray
    train_loss: np.ndarray
    suggestions: dict[str, float]
    lane_suggestions: dict[str, np.ndarray]
    settings: dict[str, Any]
    train_seconds: float
    range_test: clrjax.RangeTestResult | None = None

    @property
    def arm_names(self) -> tuple[str, ...]:
        """The arms' names."""
        return tuple(arm.name for arm in self.arms)

    @property
    def peak_lrs(self) -> np.ndarray:
        """``(arms,)`` constant, initial or peak learning rate of each arm."""
        return np.array([arm.lr for arm in self.arms])

    @property
    def target(self) -> np.ndarray:
        """``(seeds,)`` the baseline's final test accuracy for each seed."""
        return self.test_acc[0, :, -1]

    @property
    def epochs_to_target(self) -> np.ndarray:
        """``(arms, seeds)`` first epoch (1-based) reaching :attr:`target`, or -1."""
        return epochs_to_reach(self.test_acc, self.target[None, :])


def epochs_to_reach(acc: np.ndarray, target: np.ndarray) -> np.ndarray:
    """First 1-based epoch at which ``acc[..., epoch] >= target``, or -1 for never.

    Args:
      acc: accuracies with epochs on the last axis.
      target: thresholds broadcastable against ``acc[..., 0]``.

    Returns:
      Integer array of shape ``acc.shape[:-1]``.

    Examples:
      >>> import numpy as np
      >>> acc = np.array([[0.5, 0.8, 0.9], [0.1, 0.2, 0.3]])
      >>> print(epochs_to_reach(acc, np.array([0.8, 0.8])).tolist())
      [2, -1]
    """
    acc = np.asarray(acc)
    reached = acc >= np.asarray(target)[..., None]
    return np.where(reached.any(axis=-1), reached.argmax(axis=-1) + 1, -1)


def _lane_schedules(
    kind: jax.Array,
    peak_lr: jax.Array,
    *,
    total_steps: int,
    steps_per_epoch: int,
    momentum: float,
    decay_rate: float,
) -> tuple[optax.Schedule, optax.Schedule]:
    """Learning-rate and momentum schedules of one lane, selected by a traced ``kind``."""
    decay = optax.exponential_decay(
        peak_lr, transition_steps=steps_per_epoch, decay_rate=decay_rate, staircase=True
    )
    one_cycle = clrjax.one_cycle_schedule(total_steps, peak_lr)
    one_cycle_momentum = clrjax.one_cycle_momentum_schedule(total_steps)

    def learning_rate(step):
        return jnp.select(
            [kind == _CONSTANT, kind == _DECAY], [peak_lr, decay(step)], one_cycle(step)
        )

    def momentum_schedule(step):
        return jnp.where(kind == _ONE_CYCLE, one_cycle_momentum(step), momentum)

    return learning_rate, momentum_schedule


def train_lanes(
    loss_fn: Callable[[Any, tuple[jax.Array, jax.Array]], jax.Array],
    accuracy_fn: Callable[[Any, jax.Array, jax.Array], jax.Array],
    init_fn: Callable[[jax.Array], Any],
    data: _demo_data.Dataset,
    kinds: np.ndarray,
    peak_lrs: np.ndarray,
    seeds: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    momentum: float = 0.9,
    decay_rate: float = 0.97,
) -> tuple[np.ndarray, np.ndarray]:
    """Trains one lane per ``(kinds[i], peak_lrs[i], seeds[i])`` in one jitted program.

    Each lane runs SGD with Nesterov momentum for ``epochs`` epochs of
    ``len(x_train) // batch_size`` steps (the remainder of each shuffle is
    dropped), reshuffling with its seed's key every epoch. A lane whose loss
    turns NaN keeps running (its accuracy drops to chance); nothing raises.

    Args:
      loss_fn: ``loss_fn(params, (x, y)) -> scalar``.
      accuracy_fn: ``accuracy_fn(params, x, y) -> scalar``, evaluated on the test
        split after every epoch.
      init_fn: ``init_fn(key) -> params``.
      data: the dataset.
      kinds: ``(lanes,)`` schedule kind of each lane, an index into :data:`KINDS`.
      peak_lrs: ``(lanes,)`` constant, initial or peak learning rate of each lane.
      seeds: ``(lanes,)`` integer seeds (initial weights and data order).
      epochs: number of epochs.
      batch_size: mini-batch size.
      momentum: Nesterov momentum of the constant and decay kinds.
      decay_rate: per-epoch factor of the decay kind.

    Returns:
      ``(test_acc, train_loss)``, each ``(lanes, epochs)``.

    Raises:
      ValueError: if ``batch_size`` exceeds the training set.
    """
    steps_per_epoch = len(data.x_train) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size must be <= {len(data.x_train)}; got {batch_size}")
    total_steps = epochs * steps_per_epoch

    def one_lane(kind, peak_lr, seed, x_train, y_train, x_test, y_test):
        init_key, data_key = jax.random.split(jax.random.key(seed))
        learning_rate, momentum_schedule = _lane_schedules(
            kind,
            peak_lr,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            momentum=momentum,
            decay_rate=decay_rate,
        )
        opt = clrjax.scheduled(
            optax.sgd, learning_rate=learning_rate, momentum=momentum_schedule, nesterov=True
        )
        params = init_fn(init_key)
        grad_fn = jax.value_and_grad(loss_fn)

        def step(carry, idx):
            params, opt_state = carry
            loss, grads = grad_fn(params, (x_train[idx], y_train[idx]))
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        def epoch(carry, epoch_index):
            order = jax.random.permutation(jax.random.fold_in(data_key, epoch_index), len(x_train))
            batches = order[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
            carry, losses = jax.lax.scan(step, carry, batches)
            return carry, (accuracy_fn(carry[0], x_test, y_test), jnp.mean(losses))

        _, (test_acc, train_loss) = jax.lax.scan(
            epoch, (params, opt.init(params)), jnp.arange(epochs)
        )
        return test_acc, train_loss

    lanes = jax.jit(jax.vmap(one_lane, in_axes=(0, 0, 0, None, None, None, None)))
    test_acc, train_loss = lanes(
        jnp.asarray(kinds, jnp.int32),
        jnp.asarray(peak_lrs, jnp.float32),
        jnp.asarray(seeds, jnp.uint32),
        data.x_train,
        data.y_train,
        data.x_test,
        data.y_test,
    )
    return np.asarray(test_acc), np.asarray(train_loss)


def _nesterov_sgd(learning_rate: Any, momentum: Any = 0.9) -> optax.GradientTransformation:
    """The training arms' optimizer, as a range-test optimizer factory."""
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


def suggest_lrs(
    loss_fn: Callable[[Any, tuple[jax.Array, jax.Array]], jax.Array],
    init_fn: Callable[[jax.Array], Any],
    data: _demo_data.Dataset,
    *,
    methods: Sequence[str],
    batch_size: int,
    seeds: int,
    num_steps: int,
    start_lr: float,
    end_lr: float,
    momentum: float,
) -> tuple[dict[str, float], dict[str, np.ndarray], clrjax.RangeTestResult]:
    """Runs :func:`clrjax.range_test` with the training optimizer, one lane per seed.

    Each lane draws its own initial weights with ``init_fn`` and its own data
    order (``shuffle="per_seed"``), like the training seeds (not the same draws).
    Methods that give no suggestion on any lane are left out.

    Returns:
      ``({method: log-median suggestion}, {method: per-lane suggestions}, result)``.
    """
    result = clrjax.range_test(
        loss_fn,
        None,
        (data.x_train, data.y_train),
        batch_size=batch_size,
        num_steps=num_steps,
        start_lr=start_lr,
        end_lr=end_lr,
        optimizer=_nesterov_sgd,
        grid={"momentum": [momentum]},
        seeds=list(range(seeds)),
        init_fn=init_fn,
        shuffle="per_seed",
        progress=False,
    )
    medians, per_lane = {}, {}
    for method in methods:
        spread = clrjax.suggest_spread(result.lrs, result.smoothed, method)
        if spread.count:
            medians[method] = spread.median
            per_lane[method] = result.suggest(method)
    return medians, per_lane, result


def make_arms(baseline_lr: float, suggestions: dict[str, float]) -> tuple[Arm, ...]:
    """The baseline arm, then constant, decay and one-cycle arms for each suggested LR.

    Methods that suggest the same learning rate share their arms (named after
    all of them), so no configuration trains twice.

    Examples:
      >>> arms = make_arms(0.01, {"valley": 0.02, "steep": 0.05, "slide": 0.02})
      >>> print([arm.name for arm in arms])  # doctest: +NORMALIZE_WHITESPACE
      ['baseline', 'constant [valley, slide]', 'decay [valley, slide]',
       'one-cycle [valley, slide]', 'constant [steep]', 'decay [steep]', 'one-cycle [steep]']
    """
    by_lr: dict[float, list[str]] = {}
    for method, lr in suggestions.items():
        by_lr.setdefault(float(lr), []).append(method)
    arms = [Arm("baseline", "constant", float(baseline_lr), None)]
    for lr, methods in by_lr.items():
        label = ", ".join(methods)
        arms.extend(Arm(f"{kind} [{label}]", kind, lr, label) for kind in KINDS)
    return tuple(arms)


def demo_problem(
    dataset: str, hidden: Sequence[int], data_seed: int = 0
) -> tuple[_demo_data.Dataset, Callable[[jax.Array], Any], tuple[int, ...]]:
    """The dataset, ``init_fn(key) -> MLP params`` and the MLP's layer widths."""
    data = _demo_data.load_dataset(dataset, seed=data_seed)
    sizes = (data.x_train.shape[1], *hidden, data.num_classes)

    def init_fn(key: jax.Array) -> Any:
        return _demo_data.init_mlp(key, sizes)

    return data, init_fn, sizes


def run_train_demo(
    dataset: str = "digits",
    *,
    epochs: int | None = None,
    seeds: int = 5,
    batch_size: int | None = None,
    hidden: Sequence[int] | None = None,
    baseline_lr: float = 0.01,
    momentum: float = 0.9,
    decay_rate: float = 0.97,
    suggest_method: str | Sequence[str] = "valley",
    range_test_steps: int = 100,
    range_test_start_lr: float = 1e-5,
    range_test_end_lr: float = 10.0,
    lr: float | None = None,
    data_seed: int = 0,
) -> TrainDemoResult:
    """Compares a default learning rate with the range test's picks (arms: see module doc).

    Args:
      dataset: ``"digits"`` or ``"mnist1d"``.
      epochs: training epochs (dataset default when None).
      seeds: number of seeds; every arm trains once per seed, and the range test
        runs one lane per seed.
      batch_size: mini-batch size of training and range test (dataset default when None).
      hidden: hidden layer widths of the MLP (dataset default when None).
      baseline_lr: the constant learning rate of the baseline arm.
      momentum: Nesterov momentum of all arms but one-cycle (which cycles it).
      decay_rate: per-epoch decay factor of the ``decay`` arms.
      suggest_method: one or several :data:`clrjax.SUGGESTION_METHODS`; each
        gives three arms.
      range_test_steps: steps of the range test.
      range_test_start_lr: first learning rate of the range test's ramp.
      range_test_end_lr: last learning rate of the range test's ramp.
      lr: skip the range test and use this learning rate as the suggestion.
      data_seed: seed of the train/test split (digits) or generator (mnist1d).

    Returns:
      A :class:`TrainDemoResult`.

    Raises:
      ValueError: for an unknown dataset or method, or a bad seed count.
      RuntimeError: when no method gives a suggestion.
    """
    if dataset not in DEFAULTS:
        raise ValueError(f"dataset must be one of {tuple(DEFAULTS)}; got {dataset!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int; got {seeds!r}")
    methods = (suggest_method,) if isinstance(suggest_method, str) else tuple(suggest_method)
    if not methods:
        raise ValueError("suggest_method must name at least one method")
    for method in methods:
        num.check_choice("suggest_method", method, clrjax.SUGGESTION_METHODS)
    default_epochs, default_batch, default_hidden = DEFAULTS[dataset]
    epochs = default_epochs if epochs is None else epochs
    batch_size = default_batch if batch_size is None else batch_size
    hidden = tuple(default_hidden if hidden is None else hidden)

    data, init_fn, sizes = demo_problem(dataset, hidden, data_seed)
    if lr is None:
        suggestions, lane_suggestions, range_result = suggest_lrs(
            _demo_data.mlp_loss,
            init_fn,
            data,
            methods=methods,
            batch_size=batch_size,
            seeds=seeds,
            num_steps=range_test_steps,
            start_lr=range_test_start_lr,
            end_lr=range_test_end_lr,
            momentum=momentum,
        )
        if not suggestions:
            raise RuntimeError(f"the range test gave no suggestion for any of {methods}")
    else:
        suggestions, lane_suggestions, range_result = {"given": float(lr)}, {}, None

    arms = make_arms(baseline_lr, suggestions)
    lane_kinds = np.repeat([KINDS.index(arm.kind) for arm in arms], seeds)
    lane_lrs = np.repeat([arm.lr for arm in arms], seeds)
    lane_seeds = np.tile(np.arange(seeds), len(arms))
    start = time.perf_counter()
    test_acc, train_loss = train_lanes(
        _demo_data.mlp_loss,
        _demo_data.mlp_accuracy,
        init_fn,
        data,
        lane_kinds,
        lane_lrs,
        lane_seeds,
        epochs=epochs,
        batch_size=batch_size,
        momentum=momentum,
        decay_rate=decay_rate,
    )
    train_seconds = time.perf_counter() - start
    settings = {
        "dataset": dataset,
        "model": f"MLP, layer widths {sizes}, ReLU",
        "hidden": hidden,
        "train examples": len(data.x_train),
        "test examples": len(data.x_test),
        "epochs": epochs,
        "batch size": batch_size,
        "steps per epoch": len(data.x_train) // batch_size,
        "seeds": seeds,
        "optimizer": f"SGD, Nesterov momentum {momentum} (one-cycle: cycled 0.95 -> 0.85)",
        "baseline LR": baseline_lr,
        "per-epoch decay": decay_rate,
        "momentum": momentum,
        "range test": (
            "skipped (lr given)"
            if lr is not None
            else "exponential LR ramp, same optimizer and batch size, one lane per seed"
        ),
        "range test steps": range_test_steps,
        "range test start LR": range_test_start_lr,
        "range test end LR": range_test_end_lr,
        "suggestion methods": ", ".join(methods),
        "data seed": data_seed,
    }
    shape = (len(arms), seeds, epochs)
    return TrainDemoResult(
        dataset=dataset,
        arms=arms,
        test_acc=test_acc.reshape(shape),
        train_loss=train_loss.reshape(shape),
        suggestions=suggestions,
        lane_suggestions=lane_suggestions,
        settings=settings,
        train_seconds=train_seconds,
        range_test=range_result,
    )


def _mean_std(values: np.ndarray, scale: float = 1.0, digits: int = 1) -> str:
    return f"{np.mean(values) * scale:.{digits}f} ± {np.std(values) * scale:.{digits}f}"


def format_table(result: TrainDemoResult) -> str:
    """A Markdown table: per arm, LR, epochs to the baseline's final accuracy, final accuracy.

    The target of each seed is the baseline's final accuracy with that seed.
    Epoch counts are mean ± std over the seeds that reached it; seeds that never
    did are counted in their own column. Accuracies are mean ± std over seeds.
    """
    seeds = result.test_acc.shape[1]
    lines = [
        "| arm | learning rate | epochs to baseline's final acc. | never reached | "
        "final test acc. (%) | best test acc. (%) |",
        "|---|---|---|---|---|---|",
    ]
    for i, arm in enumerate(result.arms):
        reached = result.epochs_to_target[i]
        hit = reached[reached > 0]
        epochs = _mean_std(hit) if hit.size else "-"
        lines.append(
            f"| {arm.name} | {arm.lr:.3g} | {epochs} | {seeds - hit.size}/{seeds} | "
            f"{_mean_std(result.test_acc[i, :, -1], 100.0, 2)} | "
            f"{_mean_std(result.test_acc[i].max(axis=-1), 100.0, 2)} |"
        )
    return "\n".join(lines)


def plot_results(result: TrainDemoResult, arms: Sequence[str] | None = None, ax: Any = None) -> Any:
    """Plots test accuracy against epoch per arm (mean over seeds, ± std band).

    Args:
      result: a :class:`TrainDemoResult`.
      arms: names of the arms to draw (default: the baseline and the arms of the
        first suggestion method).
      ax: matplotlib ``Axes`` to draw on (a new figure when None).

    Returns:
      The matplotlib ``Axes``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = result.arm_names
    if arms is None:
        arms = names[: 1 + len(KINDS)]
    unknown = [name for name in arms if name not in names]
    if unknown:
        raise ValueError(f"arms must be names from {names}; got {unknown}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0))
    epochs = np.arange(1, result.test_acc.shape[-1] + 1)
    shown = [names.index(name) for name in arms]
    for i in shown:
        acc = result.test_acc[i] * 100.0
        mean, std = acc.mean(axis=0), acc.std(axis=0)
        (line,) = ax.plot(epochs, mean, label=f"{names[i]}, LR {result.arms[i].lr:.3g}")
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.axhline(
        result.target.mean() * 100.0, color="grey", linestyle=":", label="baseline final (mean)"
    )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    seeds = result.test_acc.shape[1]
    ax.set_title(f"{result.dataset}: SGD + Nesterov, {seeds} seeds (mean ± std)")
    later = result.test_acc[shown][:, :, len(epochs) // 4 :]
    low = np.percentile(later, 5) * 100.0
    ax.set_ylim(max(0.0, low - 2.0), min(100.0, later.max() * 100.0 + 1.0))
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return ax
