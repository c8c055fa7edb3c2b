"""A Flax NNX model through clrjax's LR range test, then a short 1cycle run with nnx.Optimizer.

Shows:

* how an ``nnx.Module`` becomes the pure ``loss_fn(params, batch)`` that
  :func:`clrjax.range_test` vmaps over lanes: ``nnx.split`` the model into a
  static ``graphdef`` and a ``State`` of parameters (a pytree), and
  ``nnx.merge`` them back inside the loss;
* a range test over three weight decays (three lanes of one compiled program)
  and the suggestion read from the lowest-loss lane;
* training the *same* module with ``nnx.Optimizer`` and an optimizer built by
  :func:`clrjax.scheduled` from :func:`clrjax.one_cycle_schedule` and
  :func:`clrjax.one_cycle_momentum_schedule`.

Already have a train step and a train state? ``examples/train_step_range_test.py``
passes them to :func:`clrjax.range_test_step` unchanged.

The data are scikit-learn's 8x8 digits (offline). Usage::

    python examples/flax_nnx_range_test.py           # ~15 s on 2 CPU cores
    python examples/flax_nnx_range_test.py --quick   # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import clrjax
from clrjax import demo


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    args = parser.parse_args(argv)
    steps, epochs, hidden = (30, 2, 16) if args.quick else (150, 15, 128)
    batch_size = 64

    data = demo.load_dataset("digits")
    model = MLP(data.x_train.shape[1], hidden, data.num_classes, rngs=nnx.Rngs(0))

    # The range test needs a pure function of a parameter pytree: split once...
    graphdef, params = nnx.split(model, nnx.Param)

    def loss_fn(params: nnx.State, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        x, y = batch
        return cross_entropy(nnx.merge(graphdef, params)(x), y)  # ...merge per call

    result = clrjax.range_test(
        loss_fn,
        params,
        (data.x_train, data.y_train),
        batch_size=batch_size,
        num_steps=steps,
        start_lr=1e-5,
        end_lr=10.0,
        grid={"weight_decay": [1e-4, 1e-5, 0.0]},
        progress=False,
    )
    suggested = result.suggest("valley")
    for i in range(result.num_lanes):
        print(f"range test lane {result.lane_label(i):<18} valley LR {suggested[i]:.3g}")
    best = result.best("minimum")
    max_lr = best.lr
    print(f"lowest loss: {result.lane_label(best.index)}; 1cycle max LR {max_lr:.3g}")

    # Train the original module (the range test never modified it) with 1cycle.
    steps_per_epoch = len(data.x_train) // batch_size
    total_steps = epochs * steps_per_epoch
    tx = optax.chain(
        optax.add_decayed_weights(best.hparams["weight_decay"]),
        clrjax.scheduled(
            optax.sgd,
            learning_rate=clrjax.one_cycle_schedule(total_steps, max_lr),
            momentum=clrjax.one_cycle_momentum_schedule(total_steps),
            nesterov=True,
        ),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array):
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def accuracy(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean(jnp.argmax(model(x), axis=-1) == y)

    key = jax.random.key(1)
    for epoch in range(1, epochs + 1):
        key, epoch_key = jax.random.split(key)
        order = jax.random.permutation(epoch_key, len(data.x_train))
        losses = []
        for idx in order[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size):
            losses.append(train_step(model, optimizer, data.x_train[idx], data.y_train[idx]))
        acc = float(accuracy(model, data.x_test, data.y_test))
        loss = float(jnp.mean(jnp.stack(losses)))
        print(f"epoch {epoch:>2}: train loss {loss:.4f}, test accuracy {acc:.2%}")
    print(f"final test accuracy {acc:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
