"""Does the range test pay off? A training comparison on the offline demo datasets.

Used by ``clrjax train-demo`` and ``examples/seed_claim.py``. It reproduces the
*shape* of Leslie Smith's CIFAR-10 claim (a range-test learning rate trains to a
hand-picked rate's accuracy in fewer epochs; adding a per-epoch decay or a
one-cycle schedule ends higher) on data that needs no download.

Four arms are trained with SGD + Nesterov momentum:

* ``baseline``: a common default constant learning rate (0.01);
* ``range test``: the range test's suggested rate, constant;
* ``range test + decay``: the suggestion decayed by 0.97 after every epoch
  (``optax.exponential_decay(..., staircase=True)``);
* ``one-cycle``: :func:`clrjax.one_cycle_schedule` peaking at the suggestion,
  with :func:`clrjax.one_cycle_momentum_schedule`.

Every (arm, seed) pair is one lane of a single jitted, vmapped training program:
an arm is a ``(kind, peak learning rate)`` pair of arrays, so the schedules are
traced and selected per lane, and the seed fixes the initial weights and the
data order (shared by all arms of one seed, so arms are compared pairwise).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import clrjax
from clrjax import _demo_data

ARMS = ("baseline", "range test", "range test + decay", "one-cycle")
_CONSTANT, _DECAY, _ONE_CYCLE = 0, 1, 2
_ARM_KINDS = (_CONSTANT, _CONSTANT, _DECAY, _ONE_CYCLE)

# Per-dataset defaults: (epochs, batch_size, hidden layer widths).
DEFAULTS = {
    "digits": (30, 32, (64,)),
    "mnist1d": (40, 64, (256, 256)),
}


@dataclasses.dataclass(frozen=True)
class TrainDemoResult:
    """Outcome of :func:`run_train_demo`; arrays are NumPy.

    Attributes:
      dataset: dataset name.
      arms: arm names, in the order of the first axis of the arrays.
      peak_lrs: ``(arms,)`` constant, initial or peak learning rate of each arm.
      test_acc: ``(arms, seeds, epochs)`` test accuracy after each epoch.
      train_loss: ``(arms, seeds, epochs)`` mean training loss of each epoch.
      suggested_lr: the learning rate the range test suggested (or the override).
      lane_suggestions: ``(range-test lanes,)`` suggestion of each range-test lane
        (one per seed); ``suggested_lr`` is their median.
      settings: every setting needed to rerun the comparison.
      train_seconds: wall time of the training program (compile included).
    """

    dataset: str
    arms: tuple[str, ...]
    peak_lrs: np.ndarray
    test_acc: np.ndarray
    train_loss: np.ndarray
    suggested_lr: float
    lane_suggestions: np.ndarray
    settings: dict[str, Any]
    train_seconds: float

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
    dropped), reshuffling with its seed's key every epoch.

    Returns:
      ``(test_acc, train_loss)``, each ``(lanes, epochs)``.
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


def suggest_lr(
    loss_fn: Callable[[Any, tuple[jax.Array, jax.Array]], jax.Array],
    params: Any,
    data: _demo_data.Dataset,
    *,
    batch_size: int,
    seeds: int,
    num_steps: int,
    momentum: float,
    method: str,
) -> tuple[float, np.ndarray]:
    """Runs :func:`clrjax.range_test` with ``seeds`` lanes; returns (median, per-lane)."""
    result = clrjax.range_test(
        loss_fn,
        params,
        (data.x_train, data.y_train),
        batch_size=batch_size,
        num_steps=num_steps,
        grid={"momentum": [momentum]},
        seeds=seeds,
    )
    lane_lrs = np.asarray(result.suggest(method), dtype=np.float64)
    if not np.isfinite(lane_lrs).any():
        raise RuntimeError(f"the range test gave no {method!r} suggestion on any lane")
    return float(np.nanmedian(lane_lrs)), lane_lrs


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
    suggest_method: str = "valley",
    range_test_steps: int = 100,
    lr: float | None = None,
    data_seed: int = 0,
) -> TrainDemoResult:
    """Compares a default learning rate with the range test's pick (four arms, see module doc).

    Args:
      dataset: ``"digits"`` or ``"mnist1d"``.
      epochs: training epochs (dataset default when None).
      seeds: number of seeds; every arm trains once per seed.
      batch_size: mini-batch size (dataset default when None).
      hidden: hidden layer widths of the MLP (dataset default when None).
      baseline_lr: the constant learning rate of the baseline arm.
      momentum: Nesterov momentum of all arms but one-cycle (which cycles it).
      decay_rate: per-epoch decay factor of the ``range test + decay`` arm.
      suggest_method: :func:`clrjax.suggest` method applied to the range test.
      range_test_steps: steps of the range test.
      lr: skip the range test and use this learning rate as the suggestion.
      data_seed: seed of the train/test split (digits) or generator (mnist1d).

    Returns:
      A :class:`TrainDemoResult`.
    """
    if dataset not in DEFAULTS:
        raise ValueError(f"dataset must be one of {tuple(DEFAULTS)}; got {dataset!r}")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int; got {seeds!r}")
    default_epochs, default_batch, default_hidden = DEFAULTS[dataset]
    epochs = default_epochs if epochs is None else epochs
    batch_size = default_batch if batch_size is None else batch_size
    hidden = tuple(default_hidden if hidden is None else hidden)

    data = _demo_data.load_dataset(dataset, seed=data_seed)
    sizes = (data.x_train.shape[1], *hidden, data.num_classes)

    def init_fn(key):
        return _demo_data.init_mlp(key, sizes)

    if lr is None:
        suggested, lane_suggestions = suggest_lr(
            _demo_data.mlp_loss,
            init_fn(jax.random.key(0)),
            data,
            batch_size=batch_size,
            seeds=seeds,
            num_steps=range_test_steps,
            momentum=momentum,
            method=suggest_method,
        )
    else:
        suggested, lane_suggestions = float(lr), np.array([lr], dtype=np.float64)

    peak_lrs = np.array([baseline_lr, suggested, suggested, suggested])
    n_arms = len(ARMS)
    lane_kinds = np.repeat(_ARM_KINDS, seeds)
    lane_lrs = np.repeat(peak_lrs, seeds)
    lane_seeds = np.tile(np.arange(seeds), n_arms)
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
        "model": f"MLP {sizes} (ReLU)",
        "epochs": epochs,
        "seeds": seeds,
        "batch_size": batch_size,
        "steps_per_epoch": len(data.x_train) // batch_size,
        "train/test": f"{len(data.x_train)}/{len(data.x_test)}",
        "optimizer": f"SGD, Nesterov momentum {momentum}",
        "baseline_lr": baseline_lr,
        "decay_rate": decay_rate,
        "suggest_method": suggest_method if lr is None else "given (lr=...)",
        "range_test_steps": range_test_steps,
        "data_seed": data_seed,
    }
    shape = (n_arms, seeds, epochs)
    return TrainDemoResult(
        dataset=dataset,
        arms=ARMS,
        peak_lrs=peak_lrs,
        test_acc=test_acc.reshape(shape),
        train_loss=train_loss.reshape(shape),
        suggested_lr=suggested,
        lane_suggestions=lane_suggestions,
        settings=settings,
        train_seconds=train_seconds,
    )


def _mean_std(values: np.ndarray, scale: float = 1.0, digits: int = 1) -> str:
    return f"{np.mean(values) * scale:.{digits}f} ± {np.std(values) * scale:.{digits}f}"


def format_table(result: TrainDemoResult) -> str:
    """A Markdown table: per arm, LR, epochs to the baseline's final accuracy, final accuracy.

    Epoch counts are mean ± std over the seeds that reached the target; seeds that
    never reached it are counted separately.
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
            f"| {arm} | {result.peak_lrs[i]:.3g} | {epochs} | {seeds - hit.size}/{seeds} | "
            f"{_mean_std(result.test_acc[i, :, -1], 100.0, 2)} | "
            f"{_mean_std(result.test_acc[i].max(axis=-1), 100.0, 2)} |"
        )
    return "\n".join(lines)


def plot_results(result: TrainDemoResult, ax: Any = None) -> Any:
    """Plots test accuracy against epoch per arm (mean over seeds, ± std band).

    Args:
      result: a :class:`TrainDemoResult`.
      ax: matplotlib ``Axes`` to draw on (a new figure when None).

    Returns:
      The matplotlib ``Axes``.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0))
    epochs = np.arange(1, result.test_acc.shape[-1] + 1)
    for i, arm in enumerate(result.arms):
        acc = result.test_acc[i] * 100.0
        mean, std = acc.mean(axis=0), acc.std(axis=0)
        (line,) = ax.plot(epochs, mean, label=f"{arm} (lr {result.peak_lrs[i]:.3g})")
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.axhline(
        result.target.mean() * 100.0, color="grey", linestyle=":", label="baseline final (mean)"
    )
    seeds = result.test_acc.shape[1]
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{result.dataset}: SGD + Nesterov, {seeds} seeds (mean ± std)")
    low = np.percentile(result.test_acc[:, :, result.test_acc.shape[-1] // 4 :], 5) * 100.0
    ax.set_ylim(max(0.0, low - 2.0), min(100.0, result.test_acc.max() * 100.0 + 1.0))
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return ax
