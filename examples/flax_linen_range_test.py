"""A Flax Linen model with BatchNorm through clrjax's LR range test, then a short 1cycle run.

Shows:

* a ``linen`` module used through ``model.apply``: the range test's
  ``loss_fn(params, state, batch) -> (loss, new_state)`` protocol threads the
  mutable ``batch_stats`` collection through the steps of every lane (each
  lane keeps its own running statistics);
* range tests for several seeds at once (``seeds=``: every lane initialised by
  ``init_fn`` from its own key) and :func:`clrjax.suggest_spread` over them;
* a plain jitted optax loop training the model with
  :func:`clrjax.one_cycle_schedule` and cyclical momentum
  (:func:`clrjax.one_cycle_momentum_schedule`) via :func:`clrjax.scheduled`.

Already have a train step and a train state? ``examples/train_step_range_test.py``
passes them to :func:`clrjax.range_test_step` unchanged.

The data are scikit-learn's 8x8 digits (offline). Usage::

    python examples/flax_linen_range_test.py           # ~15 s on 2 CPU cores
    python examples/flax_linen_range_test.py --quick   # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import clrjax
from clrjax import demo


class MLP(nn.Module):
    """Dense -> BatchNorm -> ReLU, twice, then a linear classifier."""

    hidden: int
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for _ in range(2):
            x = nn.Dense(self.hidden)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
        return nn.Dense(self.num_classes)(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    args = parser.parse_args(argv)
    steps, epochs, hidden = (30, 2, 16) if args.quick else (150, 15, 128)
    batch_size = 64

    data = demo.load_dataset("digits")
    model = MLP(hidden, data.num_classes)
    variables = model.init(jax.random.key(0), data.x_train[:1], train=False)

    def loss_fn(params, batch_stats, batch):
        x, y = batch
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates["batch_stats"]

    # One lane per seed; each lane's parameters come from init_fn(lane_key).
    result = clrjax.range_test(
        loss_fn,
        None,
        (data.x_train, data.y_train),
        init_fn=lambda key: model.init(key, data.x_train[:1], train=False)["params"],
        state=variables["batch_stats"],
        seeds=[0, 1, 2],
        shuffle="per_seed",
        batch_size=batch_size,
        num_steps=steps,
        start_lr=1e-5,
        end_lr=10.0,
        progress=False,
    )
    for method in ("valley", "minimum"):
        spread = clrjax.suggest_spread(result.lrs, result.smoothed, method)
        print(
            f"{method:>8}: median LR {spread.median:.3g} over {spread.count} seeds "
            f"(from {spread.low:.3g} to {spread.high:.3g})"
        )
    max_lr = clrjax.suggest_spread(result.lrs, result.smoothed, "minimum").median
    print(f"1cycle max LR {max_lr:.3g} (LR at the lowest loss / 10, median over seeds)")

    steps_per_epoch = len(data.x_train) // batch_size
    total_steps = epochs * steps_per_epoch
    tx = clrjax.scheduled(
        optax.sgd,
        learning_rate=clrjax.one_cycle_schedule(total_steps, max_lr),
        momentum=clrjax.one_cycle_momentum_schedule(total_steps),
        nesterov=True,
    )
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, batch_stats, opt_state, x, y):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, (x, y)
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    @jax.jit
    def accuracy(params, batch_stats, x, y):
        logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
        return jnp.mean(jnp.argmax(logits, axis=-1) == y)

    key = jax.random.key(1)
    for epoch in range(1, epochs + 1):
        key, epoch_key = jax.random.split(key)
        order = jax.random.permutation(epoch_key, len(data.x_train))
        losses = []
        for idx in order[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size):
            params, batch_stats, opt_state, loss = train_step(
                params, batch_stats, opt_state, data.x_train[idx], data.y_train[idx]
            )
            losses.append(loss)
        acc = float(accuracy(params, batch_stats, data.x_test, data.y_test))
        loss = float(jnp.mean(jnp.stack(losses)))
        print(f"epoch {epoch:>2}: train loss {loss:.4f}, test accuracy {acc:.2%}")
    print(f"final test accuracy {acc:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
