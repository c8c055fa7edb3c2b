"""Your own Flax train step and train state through the LR range test and find_schedule_step.

:func:`clrjax.range_test_step` takes the ``train_step(state, batch) -> (state,
metrics)`` you already have and runs it once per lane, with every lane's
learning rate (the ramp) and grid values written into the optimizer state
before each step; :func:`clrjax.find_schedule_step` races schedules through
the same train step. The only requirement is an optimizer built with
``optax.inject_hyperparams``, so that those values live in the state:

    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=1e-4),
    )

Shows, on scikit-learn's 8x8 digits (offline):

* **Flax linen**: a ``flax.training.train_state.TrainState``, a jitted train
  step with dropout (``takes_rng=True``: a PRNG key per lane and step), an
  eval step scoring a validation split (carved from the training split) as the
  run goes (``val_step``), a weight-decay grid as lanes; then
  :func:`clrjax.find_schedule_step` picking the schedule (one-cycle, with
  AdamW's ``b1`` cycled, or a per-epoch decay) and the weight decay by racing
  them on validation accuracy (``metric_key="accuracy"``), and the full run
  with ``choice.optimizer(factory)``, by the very same train step;
* **Flax NNX**: ``nnx.Optimizer`` through the functional API: the train state
  is ``nnx.split((model, optimizer))``'s ``State``, the train step merges it,
  updates and returns ``nnx.state((model, optimizer))``.

Usage::

    python examples/train_step_range_test.py           # ~100 s on 2 CPU cores
    python examples/train_step_range_test.py --quick   # tiny settings (used by the tests)
"""

from __future__ import annotations

import argparse
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.training import train_state

import clrjax
from clrjax import demo

WEIGHT_DECAYS = [1e-1, 1e-2, 1e-4]


def clipped_adamw(learning_rate, weight_decay, b1=0.9) -> optax.GradientTransformation:
    """AdamW after gradient clipping: the optimizer factory of this example."""
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(learning_rate, b1=b1, weight_decay=weight_decay),
    )


def make_optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    """``inject_hyperparams`` keeps the LR, ``b1`` and the weight decay in the state."""
    return optax.inject_hyperparams(clipped_adamw)(
        learning_rate=learning_rate, weight_decay=weight_decay
    )


def report(result: clrjax.RangeTestResult):
    """Prints each lane's suggestions and returns the lane with the lowest loss."""
    minimum, valley = result.suggest("minimum"), result.suggest("valley")
    for i in range(result.num_lanes):
        print(
            f"  {result.lane_label(i):<20} minimum LR {minimum[i]:.3g}, valley LR {valley[i]:.3g}"
            f", diverged at step {result.diverged_at[i]}"
        )
    best = result.best()
    label = result.lane_label(best.index)
    print(f"  best lane: {label}, minimum LR {best.lr:.3g} (ran {result.strategy})")
    return best


# --- Flax linen: TrainState --------------------------------------------------------------


class MLP(nn.Module):
    hidden: int
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)


@jax.jit
def linen_train_step(state: train_state.TrainState, batch, dropout_key: jax.Array):
    x, y = batch

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, x, train=True, rngs={"dropout": dropout_key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
    return state.apply_gradients(grads=grads), {"loss": loss, "accuracy": accuracy}


@jax.jit
def linen_eval_step(state: train_state.TrainState, batch):
    x, y = batch
    logits = state.apply_fn({"params": state.params}, x, train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}


def linen_example(data: demo.Dataset, hidden: int, steps: int, epochs: int, batch_size: int):
    model = MLP(hidden, data.num_classes)
    params = model.init(jax.random.key(0), data.x_train[:1], train=False)["params"]
    state = train_state.TrainState.create(
        apply_fn=model.apply, params=params, tx=make_optimizer(1e-3, 1e-4)
    )
    # A validation split carved from the training split: the test split stays untouched.
    order = np.random.default_rng(0).permutation(len(data.x_train))
    n_val = len(order) // 5
    train_data = (data.x_train[order[n_val:]], data.y_train[order[n_val:]])
    val_data = (data.x_train[order[:n_val]], data.y_train[order[:n_val]])

    print("Flax linen TrainState, clip + AdamW, dropout:")
    result = clrjax.range_test_step(
        linen_train_step,
        state,
        train_data,
        grid={"weight_decay": WEIGHT_DECAYS},
        batch_size=batch_size,
        num_steps=steps,
        start_lr=1e-5,
        end_lr=10.0,
        validation=clrjax.Validation(val_data, step=linen_eval_step, every=10),
        model=clrjax.Model(takes_rng=True),  # linen_train_step(state, batch, key)
    )
    best = report(result)
    val = result.val_losses[best.index]
    print(f"  its lowest validation loss during the test: {np.nanmin(val):.3f}")

    # The schedule and weight decay: raced through the same train and eval steps.
    steps_per_epoch = len(train_data[0]) // batch_size
    choice = clrjax.find_schedule_step(
        linen_train_step,
        state,
        train_data,
        val_data=val_data,
        val_step=linen_eval_step,
        metric_key="accuracy",
        total_steps=epochs * steps_per_epoch,
        batch_size=batch_size,
        grid={"weight_decay": WEIGHT_DECAYS},
        model=clrjax.Model(takes_rng=True),
        search=clrjax.Search(range_test_steps=steps),
    )
    print(f"  {choice}")
    print(f"  decided by {choice.decided_by}")

    # Neither test changed `state`: train its params with the choice, same train step.
    # choice.optimizer(factory) is the factory with the chosen schedules (LR, and b1
    # for one-cycle) and weight decay.
    tx = choice.optimizer(clipped_adamw)
    state = train_state.TrainState.create(apply_fn=model.apply, params=state.params, tx=tx)
    x_train, y_train = train_data
    key = jax.random.key(1)
    for epoch in range(1, epochs + 1):
        key, order_key = jax.random.split(key)
        order = jax.random.permutation(order_key, len(x_train))
        for idx in order[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size):
            key, dropout_key = jax.random.split(key)
            state, _ = linen_train_step(state, (x_train[idx], y_train[idx]), dropout_key)
        metrics = linen_eval_step(state, (data.x_test, data.y_test))
        print(f"  epoch {epoch}: test accuracy {float(metrics['accuracy']):.2%}")
    print(f"final test accuracy {float(metrics['accuracy']):.2%}")


# --- Flax NNX: nnx.Optimizer, functional split/merge --------------------------------------


class NNXMLP(nnx.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int, *, rngs: nnx.Rngs):
        self.hidden1 = nnx.Linear(n_in, hidden, rngs=rngs)
        self.hidden2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, n_out, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden2(nnx.relu(self.hidden1(x)))))


def nnx_example(data: demo.Dataset, hidden: int, steps: int, batch_size: int):
    model = NNXMLP(data.x_train.shape[1], hidden, data.num_classes, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, make_optimizer(1e-3, 1e-4), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))  # the train state: an nnx.State pytree

    @jax.jit
    def train_step(state: nnx.State, batch):
        model, optimizer = nnx.merge(graphdef, state)
        x, y = batch

        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
        return nnx.state((model, optimizer)), {"loss": loss, "accuracy": accuracy}

    print("Flax NNX nnx.Optimizer (split state), clip + AdamW:")
    result = clrjax.range_test_step(
        train_step,
        state,
        (data.x_train, data.y_train),
        grid={"weight_decay": WEIGHT_DECAYS},
        batch_size=batch_size,
        num_steps=steps,
        start_lr=1e-5,
        end_lr=10.0,
    )
    report(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    args = parser.parse_args(argv)
    steps, epochs, hidden = (40, 2, 32) if args.quick else (200, 10, 128)
    batch_size = 64

    data = demo.load_dataset("digits")
    linen_example(data, hidden, steps, epochs, batch_size)
    nnx_example(data, hidden, steps, batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
