"""The six tasks of ``bench_vs_lr_free.py``: data, model, optimizer and how find_schedule is called.

Offline data only: scikit-learn's bundled digits and mnist1d generated
locally (``clrjax.demo.load_dataset``), and a teacher-student regression drawn
from a fixed seed. Every task is a pure ``loss_fn(params, batch, key)`` (the
key feeds dropout; the others ignore it), a ``score(params, batch)`` on
held-out data (accuracy, or minus the MSE) and ``init_fn(key) -> params``, so
one trainer (``_lr_free_train.py``) runs every method on it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.training import train_state

import clrjax
from clrjax import demo

TASKS = ("mlp_sgd", "mlp_adamw", "cnn1d_sgd", "linen_cnn_adam", "regression_sgd", "nnx_dropout")
# Which tasks clrjax's find_schedule defaults were measured on (docs/find_schedule.md: MLPs on
# mnist1d, with SGD and AdamW, and on digits).
TUNING = {
    "mlp_sgd": "used for tuning clrjax's defaults",
    "mlp_adamw": "used for tuning clrjax's defaults",
    "cnn1d_sgd": "held out (its data, mnist1d, was used for tuning with MLPs)",
    "linen_cnn_adam": "held out (its data, digits, was used for tuning with an MLP)",
    "regression_sgd": "held out",
    "nnx_dropout": "held out (its data, digits, was used for tuning with an MLP)",
}


def nesterov_sgd(learning_rate: Any, momentum: Any = 0.9) -> optax.GradientTransformation:
    """SGD with Nesterov momentum 0.9 (one-cycle cycles ``momentum``)."""
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


def adamw_wd(learning_rate: Any, b1: Any = 0.9) -> optax.GradientTransformation:
    """AdamW with weight decay 1e-4 (one-cycle cycles ``b1``)."""
    return optax.adamw(learning_rate, b1=b1, weight_decay=1e-4)


def adam(learning_rate: Any, b1: Any = 0.9) -> optax.GradientTransformation:
    """Adam (one-cycle cycles ``b1``)."""
    return optax.adam(learning_rate, b1=b1)


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """One benchmark task.

    Attributes:
      name: one of :data:`TASKS`.
      description: one line for the report.
      train: the whole training split ``(x, y)`` (the final runs train on it).
      test: the test split (scored once, at the end of each final run).
      race_train, race_val: the first 80% of ``train`` and the rest: what the
        selection methods (find_schedule, Optuna) may train and score on.
      init_fn: ``init_fn(key) -> params``.
      loss_fn: ``loss_fn(params, batch, key) -> loss`` (training mode).
      score_fn: ``score_fn(params, batch) -> scalar``, higher is better
        (accuracy, or minus the MSE).
      factory: the optimizer factory ``(learning_rate, momentum-or-b1) -> tx``.
      momentum_name: the argument of ``factory`` one-cycle cycles.
      base_momentum: its constant value.
      default_lr: the optimizer's usual default learning rate (held constant).
      grid_low: the lowest peak of the hand-made one-cycle grid (8 peaks, 2x apart).
      epochs: epochs of ``train`` (the budget).
      batch_size: examples per step.
      regression: scores are minus the test MSE (reported as MSE, lower is better).
      find: ``find(task, key, total_steps, steps_per_epoch) -> ScheduleChoice``.
      tuning: whether clrjax's defaults were tuned on the task (:data:`TUNING`).
      lanes: how the benchmark's trainer runs the seeds of a method: ``"vmap"``
        (side by side) or ``"map"`` (one after another: the conv nets, whose
        vmapped convolutions are grouped ones, slow on CPU).
    """

    name: str
    description: str
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    race_train: tuple[np.ndarray, np.ndarray]
    race_val: tuple[np.ndarray, np.ndarray]
    init_fn: Callable[[jax.Array], Any]
    loss_fn: Callable[..., jax.Array]
    score_fn: Callable[..., jax.Array]
    factory: Callable[..., optax.GradientTransformation]
    momentum_name: str
    base_momentum: float
    default_lr: float
    grid_low: float
    epochs: int
    batch_size: int
    regression: bool
    find: Callable[..., clrjax.ScheduleChoice]
    tuning: str = ""
    lanes: str = "vmap"

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train[0]) // self.batch_size


def call_find_schedule(loss_fn, data, *, val_data, val_metric, optimizer, init_fn, total_steps,
                       batch_size, steps_per_epoch, key, takes_rng=False):  # fmt: skip
    """The benchmark's one call of :func:`clrjax.find_schedule`.

    Every loss-function task comes through here, so a change of
    find_schedule's keywords is made in this one place.
    """
    return clrjax.find_schedule(
        loss_fn,
        None,
        data,
        val_data=val_data,
        val_metric=val_metric,
        total_steps=total_steps,
        batch_size=batch_size,
        optimizer=optimizer,
        key=key,
        model=clrjax.Model(init_fn=init_fn, takes_rng=takes_rng),
        search=clrjax.Search(steps_per_epoch=steps_per_epoch),
        execution=clrjax.Execution(progress=False),
    )


def call_find_schedule_step(train_step, train_state0, data, *, val_data, val_step, metric_key,
                            total_steps, batch_size, steps_per_epoch, key):  # fmt: skip
    """The benchmark's one call of :func:`clrjax.find_schedule_step`."""
    return clrjax.find_schedule_step(
        train_step,
        train_state0,
        data,
        val_data=val_data,
        val_step=val_step,
        metric_key=metric_key,
        total_steps=total_steps,
        batch_size=batch_size,
        key=key,
        model=clrjax.Model(takes_rng=True),
        search=clrjax.Search(steps_per_epoch=steps_per_epoch),
        execution=clrjax.Execution(progress=False),
    )


def _split(data: demo.Dataset):
    cut = round(len(data.x_train) * demo.RACE_FRACTION)
    train = (data.x_train, data.y_train)
    return (
        train,
        (data.x_test, data.y_test),
        (data.x_train[:cut], data.y_train[:cut]),
        (data.x_train[cut:], data.y_train[cut:]),
    )


def _cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _accuracy(logits: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, axis=-1) == y)


def _loss_find(task: Task, key: int, total_steps: int, steps_per_epoch: int, takes_rng: bool):
    """find_schedule on a loss-function task: accuracy (or nothing, regression) scores."""
    if takes_rng:

        def loss(params, batch, rng):
            return task.loss_fn(params, batch, rng)

    else:

        def loss(params, batch):
            return task.loss_fn(params, batch, None)

    return call_find_schedule(
        loss,
        task.race_train,
        val_data=task.race_val,
        val_metric=None if task.regression else task.score_fn,
        optimizer=task.factory,
        init_fn=task.init_fn,
        total_steps=total_steps,
        batch_size=task.batch_size,
        steps_per_epoch=steps_per_epoch,
        key=key,
        takes_rng=takes_rng,
    )


# --- (1), (2): the mnist1d MLP 40-256-256-10 (the task) ---------------------------


def _mlp_task(name: str, optimizer: str) -> Task:
    data = demo.load_dataset("mnist1d")
    sizes = (data.x_train.shape[1], 256, 256, data.num_classes)
    sgd = optimizer == "sgd"

    def loss_fn(params, batch, key):
        return demo.mlp_loss(params, batch)

    return Task(
        name=name,
        description=(
            "mnist1d, MLP 40-256-256-10, "
            + ("SGD Nesterov momentum 0.9" if sgd else "AdamW weight decay 1e-4")
            + ", batch 128, 60 epochs"
        ),
        **dict(zip(("train", "test", "race_train", "race_val"), _split(data), strict=True)),
        init_fn=functools.partial(demo.init_mlp, sizes=sizes),
        loss_fn=loss_fn,
        score_fn=demo.mlp_accuracy,
        factory=nesterov_sgd if sgd else adamw_wd,
        momentum_name="momentum" if sgd else "b1",
        base_momentum=0.9,
        default_lr=0.01 if sgd else 1e-3,
        grid_low=0.0125 if sgd else 1.25e-4,
        epochs=60,
        batch_size=128,
        regression=False,
        find=functools.partial(_loss_find, takes_rng=False),
    )


# --- (3): a 1-D CNN on mnist1d --------------------------------------------------------------


class CNN1D(nn.Module):
    """Conv(16, 5) -> ReLU -> max-pool 2 -> Conv(32, 5) -> ReLU -> max-pool 2 -> Dense(10)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x[..., None]
        for channels in (16, 32):
            x = nn.max_pool(nn.relu(nn.Conv(channels, (5,))(x)), (2,), strides=(2,))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _cnn1d_task() -> Task:
    data = demo.load_dataset("mnist1d")
    model = CNN1D()

    def loss_fn(params, batch, key):
        x, y = batch
        return _cross_entropy(model.apply({"params": params}, x), y)

    def score_fn(params, batch):
        x, y = batch
        return _accuracy(model.apply({"params": params}, x), y)

    return Task(
        name="cnn1d_sgd",
        description="mnist1d, 1-D CNN (conv 16, conv 32, dense), SGD Nesterov 0.9, batch 128, "
        "30 epochs",
        **dict(zip(("train", "test", "race_train", "race_val"), _split(data), strict=True)),
        init_fn=lambda key: model.init(key, data.x_train[:1])["params"],
        loss_fn=loss_fn,
        score_fn=score_fn,
        factory=nesterov_sgd,
        momentum_name="momentum",
        base_momentum=0.9,
        default_lr=0.01,
        grid_low=0.0125,
        epochs=30,
        batch_size=128,
        regression=False,
        find=functools.partial(_loss_find, takes_rng=False),
        lanes="map",
    )


# --- (4): a Flax linen 2-D CNN on digits, Adam, through find_schedule_step -----------------


class CNN2D(nn.Module):
    """Two 3x3 convs (16, 32 channels, avg-pool between) and a dense head."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], 8, 8, 1)
        x = nn.avg_pool(nn.relu(nn.Conv(16, (3, 3))(x)), (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _linen_task() -> Task:
    data = demo.load_dataset("digits")
    model = CNN2D()

    def loss_fn(params, batch, key):
        x, y = batch
        return _cross_entropy(model.apply({"params": params}, x), y)

    def score_fn(params, batch):
        x, y = batch
        return _accuracy(model.apply({"params": params}, x), y)

    def find(task: Task, key: int, total_steps: int, steps_per_epoch: int):
        # The user's own train state: Adam with its hyperparameters injected.
        tx = optax.inject_hyperparams(adam)(learning_rate=1e-3, b1=0.9)
        state = train_state.TrainState.create(
            apply_fn=model.apply, params=task.init_fn(jax.random.key(key)), tx=tx
        )

        def train_step(state, batch, rng):
            loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, rng)
            return state.apply_gradients(grads=grads), {"loss": loss}

        def val_step(state, batch):
            return {
                "loss": loss_fn(state.params, batch, None),
                "accuracy": score_fn(state.params, batch),
            }

        return call_find_schedule_step(
            train_step,
            state,
            task.race_train,
            val_data=task.race_val,
            val_step=val_step,
            metric_key="accuracy",
            total_steps=total_steps,
            batch_size=task.batch_size,
            steps_per_epoch=steps_per_epoch,
            key=key,
        )

    return Task(
        name="linen_cnn_adam",
        description="digits, Flax linen 2-D CNN (conv 16, avg-pool, conv 32, dense), Adam, "
        "batch 64, 30 epochs; find_schedule_step on an inject_hyperparams TrainState",
        **dict(zip(("train", "test", "race_train", "race_val"), _split(data), strict=True)),
        init_fn=lambda key: model.init(key, data.x_train[:1])["params"],
        loss_fn=loss_fn,
        score_fn=score_fn,
        factory=adam,
        momentum_name="b1",
        base_momentum=0.9,
        default_lr=1e-3,
        grid_low=1.25e-4,
        epochs=30,
        batch_size=64,
        regression=False,
        find=find,
        lanes="map",
    )


# --- (5): teacher-student MLP regression, MSE, no val_metric -----------------------------


def teacher_student(seed: int = 0, n_train: int = 4000, n_test: int = 1000, dim: int = 20):
    """``x ~ N(0, I)``; ``y`` = a random tanh MLP 20-32-1 teacher plus noise (std 0.1)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, dim)).astype(np.float32)
    w1 = rng.standard_normal((dim, 32)) / np.sqrt(dim)
    w2 = rng.standard_normal((32, 1)) / np.sqrt(32)
    y = np.tanh(x @ w1) @ w2 * 2.0 + 0.1 * rng.standard_normal((len(x), 1))
    y = y.astype(np.float32)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def _regression_task() -> Task:
    train, test = teacher_student()
    sizes = (train[0].shape[1], 128, 128, 1)
    cut = round(len(train[0]) * demo.RACE_FRACTION)

    def mse(params, batch):
        x, y = batch
        return jnp.mean((demo.mlp_apply(params, x) - y) ** 2)

    return Task(
        name="regression_sgd",
        description="teacher-student regression (tanh teacher 20-32-1 + noise 0.1), student MLP "
        "20-128-128-1, MSE, no val_metric, SGD Nesterov 0.9, batch 128, 40 epochs",
        train=train,
        test=test,
        race_train=(train[0][:cut], train[1][:cut]),
        race_val=(train[0][cut:], train[1][cut:]),
        init_fn=functools.partial(demo.init_mlp, sizes=sizes),
        loss_fn=lambda params, batch, key: mse(params, batch),
        score_fn=lambda params, batch: -mse(params, batch),
        factory=nesterov_sgd,
        momentum_name="momentum",
        base_momentum=0.9,
        default_lr=0.01,
        grid_low=0.00125,
        epochs=40,
        batch_size=128,
        regression=True,
        find=functools.partial(_loss_find, takes_rng=False),
    )


# --- (6): a Flax NNX MLP with dropout, Adam -------------------------------------------------


class DropoutMLP(nnx.Module):
    """64-256-256-10, ReLU, dropout 0.3 after each hidden layer."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.hidden1 = nnx.Linear(64, 256, rngs=rngs)
        self.hidden2 = nnx.Linear(256, 256, rngs=rngs)
        self.out = nnx.Linear(256, 10, rngs=rngs)
        self.dropout = nnx.Dropout(0.3)

    def __call__(self, x: jax.Array, key: jax.Array | None) -> jax.Array:
        train = key is not None
        rngs = nnx.Rngs(dropout=key) if train else None
        x = self.dropout(nnx.relu(self.hidden1(x)), deterministic=not train, rngs=rngs)
        x = self.dropout(nnx.relu(self.hidden2(x)), deterministic=not train, rngs=rngs)
        return self.out(x)


def _nnx_task() -> Task:
    data = demo.load_dataset("digits")
    graphdef, _ = nnx.split(DropoutMLP(rngs=nnx.Rngs(0)), nnx.Param)

    def init_fn(key):
        return nnx.split(DropoutMLP(rngs=nnx.Rngs(params=key)), nnx.Param)[1]

    def loss_fn(params, batch, key):
        x, y = batch
        return _cross_entropy(nnx.merge(graphdef, params)(x, key), y)

    def score_fn(params, batch):
        x, y = batch
        return _accuracy(nnx.merge(graphdef, params)(x, None), y)

    return Task(
        name="nnx_dropout",
        description="digits, Flax NNX MLP 64-256-256-10 with dropout 0.3, Adam, batch 64, "
        "40 epochs (find_schedule with takes_rng)",
        **dict(zip(("train", "test", "race_train", "race_val"), _split(data), strict=True)),
        init_fn=init_fn,
        loss_fn=loss_fn,
        score_fn=score_fn,
        factory=adam,
        momentum_name="b1",
        base_momentum=0.9,
        default_lr=1e-3,
        grid_low=1.25e-4,
        epochs=40,
        batch_size=64,
        regression=False,
        find=functools.partial(_loss_find, takes_rng=True),
    )


def load_task(name: str) -> Task:
    """Builds task ``name`` (one of :data:`TASKS`)."""
    builders = {
        "mlp_sgd": lambda: _mlp_task("mlp_sgd", "sgd"),
        "mlp_adamw": lambda: _mlp_task("mlp_adamw", "adamw"),
        "cnn1d_sgd": _cnn1d_task,
        "linen_cnn_adam": _linen_task,
        "regression_sgd": _regression_task,
        "nnx_dropout": _nnx_task,
    }
    if name not in builders:
        raise ValueError(f"unknown task {name!r}; one of {TASKS}")
    return dataclasses.replace(builders[name](), tuning=TUNING[name])
