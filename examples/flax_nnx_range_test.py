"""A Flax NNX model through clrjax's range test and find_schedule, then nnx.Optimizer training.

Shows:

* how an ``nnx.Module`` becomes the pure ``loss_fn(params, batch)`` that
  :func:`clrjax.range_test` and :func:`clrjax.find_schedule` vmap over lanes:
  ``nnx.split`` the model into a static ``graphdef`` and a ``State`` of
  parameters (a pytree), and ``nnx.merge`` them back inside the loss;
* a range test over three weight decays (three lanes of one compiled program)
  and its ``"minimum"`` suggestion per lane: the curves, read;
* :func:`clrjax.find_schedule` over the same weight decays: the range test
  proposes one-cycle peaks and per-epoch decays, a race of short trainings
  scored by accuracy on a validation split (carved from the training split)
  picks the schedule and the weight decay;
* training the *same* module with ``nnx.Optimizer`` and ``choice.optimizer()``
  (:func:`clrjax.pytorch_sgd` with the chosen schedules, applied by
  :func:`clrjax.scheduled`).

Already have a train step and a train state? ``examples/train_step_range_test.py``
passes them to :func:`clrjax.range_test_step` and :func:`clrjax.find_schedule_step`.

The data are scikit-learn's 8x8 digits (offline). Usage::

    python examples/flax_nnx_range_test.py           # ~55 s on 2 CPU cores
    python examples/flax_nnx_range_test.py --quick   # tiny settings (used by the tests)
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import clrjax
from clrjax import demo

WEIGHT_DECAYS = (1e-4, 1e-5, 0.0)


class MLP(nnx.Module):
    """Two hidden ReLU layers."""

    def __init__(self, n_in: int, hidden: int, n_out: int, *, rngs: nnx.Rngs):
        self.hidden1 = nnx.Linear(n_in, hidden, rngs=rngs)
        self.hidden2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, n_out, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.hidden1(x))
        x = nnx.relu(self.hidden2(x))
        return self.out(x)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(model(x), axis=-1) == y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    args = parser.parse_args(argv)
    steps, epochs, hidden = (30, 2, 16) if args.quick else (150, 15, 128)
    batch_size = 64

    data = demo.load_dataset("digits")
    model = MLP(data.x_train.shape[1], hidden, data.num_classes, rngs=nnx.Rngs(0))

    # A validation split carved from the training split scores find_schedule's race.
    order = np.random.default_rng(0).permutation(len(data.x_train))
    n_val = len(order) // 5
    train_data = (data.x_train[order[n_val:]], data.y_train[order[n_val:]])
    val_data = (data.x_train[order[:n_val]], data.y_train[order[:n_val]])

    # The range test needs a pure function of a parameter pytree: split once...
    graphdef, params = nnx.split(model, nnx.Param)

    def loss_fn(params: nnx.State, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        x, y = batch
        return cross_entropy(nnx.merge(graphdef, params)(x), y)  # ...merge per call

    def val_accuracy(params: nnx.State, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        return accuracy(nnx.merge(graphdef, params), *batch)

    result = clrjax.range_test(
        loss_fn,
        params,
        train_data,
        batch_size=batch_size,
        num_steps=steps,
        start_lr=1e-5,
        end_lr=10.0,
        grid={"weight_decay": WEIGHT_DECAYS},
        execution=clrjax.Execution(progress=False),
    )
    suggested = result.suggest()
    for i in range(result.num_lanes):
        print(f"range test lane {result.lane_label(i):<18} minimum LR {suggested[i]:.3g}")

    # The schedule: not read off a suggestion, but raced on held-out data.
    steps_per_epoch = len(train_data[0]) // batch_size
    choice = clrjax.find_schedule(
        loss_fn,
        params,
        train_data,
        val_data=val_data,
        val_metric=val_accuracy,
        total_steps=epochs * steps_per_epoch,
        batch_size=batch_size,
        grid={"weight_decay": WEIGHT_DECAYS},
        search=clrjax.Search(range_test_steps=steps),
    )
    print(choice)
    print(f"{choice.kind} at LR {choice.learning_rate:.3g} (find_schedule, {choice.decided_by})")

    # Train the original module (neither test modified it) with the choice.
    optimizer = nnx.Optimizer(model, choice.optimizer(), wrt=nnx.Param)

    @nnx.jit
    def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array):
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
        optimizer.update(model, grads)
        return loss

    test_accuracy = nnx.jit(accuracy)
    x_train, y_train = train_data
    key = jax.random.key(1)
    for epoch in range(1, epochs + 1):
        key, epoch_key = jax.random.split(key)
        order = jax.random.permutation(epoch_key, len(x_train))
        losses = []
        for idx in order[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size):
            losses.append(train_step(model, optimizer, x_train[idx], y_train[idx]))
        acc = float(test_accuracy(model, data.x_test, data.y_test))
        loss = float(jnp.mean(jnp.stack(losses)))
        print(f"epoch {epoch:>2}: train loss {loss:.4f}, test accuracy {acc:.2%}")
    print(f"final test accuracy {acc:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
