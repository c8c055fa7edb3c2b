"""A Flax Linen model with BatchNorm through clrjax's range test and find_schedule, then 1cycle.

Shows:

* a ``linen`` module used through ``model.apply``: the range test's
  ``loss_fn(params, state, batch) -> (loss, new_state)`` protocol threads the
  mutable ``batch_stats`` collection through the steps of every lane (each
  lane keeps its own running statistics);
* range tests for several seeds at once (``seeds=`` with
  ``shuffle="per_seed"``: every lane sees its own order of the data) and
  :func:`clrjax.suggest_spread` over them: how far the readings of the curve
  move from seed to seed;
* the one-cycle peak from :func:`clrjax.find_schedule` with the same
  ``state=`` protocol (``val_metric(params, state, batch)``: accuracy in
  inference mode on a validation split carved from the training split): the
  range test proposes peaks, a race of short trainings picks one;
* a plain jitted optax loop training the model with ``choice.optimizer()``:
  :func:`clrjax.one_cycle_schedule` and cyclical momentum
  (:func:`clrjax.one_cycle_momentum_schedule`) applied by :func:`clrjax.scheduled`.

Already have a train step and a train state? ``examples/train_step_range_test.py``
passes them to :func:`clrjax.range_test_step` and :func:`clrjax.find_schedule_step`.

The data are scikit-learn's 8x8 digits (offline). Usage::

    python examples/flax_linen_range_test.py           # ~90 s on 2 CPU cores
    python examples/flax_linen_range_test.py --quick   # tiny settings (used by the tests)
"""

from __future__ import annotations

import argparse
import functools
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
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
    # A validation split carved from the training split scores find_schedule's race.
    order = np.random.default_rng(0).permutation(len(data.x_train))
    n_val = len(order) // 5
    train_data = (data.x_train[order[n_val:]], data.y_train[order[n_val:]])
    val_data = (data.x_train[order[:n_val]], data.y_train[order[:n_val]])

    def loss_fn(params, batch_stats, batch):
        x, y = batch
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates["batch_stats"]

    # One lane per seed, each with its own data order (init_fn=lambda key: ...
    # would also draw each lane's parameters from its own key).
    result = clrjax.range_test(
        loss_fn,
        variables["params"],
        train_data,
        seeds=[0, 1, 2],
        shuffle="per_seed",
        batch_size=batch_size,
        num_steps=steps,
        start_lr=1e-5,
        end_lr=10.0,
        model=clrjax.Model(state=variables["batch_stats"]),
        execution=clrjax.Execution(progress=False),
    )
    for method in ("valley", "minimum"):
        spread = clrjax.suggest_spread(result.lrs, result.smoothed, method)
        print(
            f"{method:>8}: median LR {spread.median:.3g} over {spread.count} seeds "
            f"(from {spread.low:.3g} to {spread.high:.3g})"
        )

    def accuracy(params, batch_stats, batch):
        x, y = batch
        logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
        return jnp.mean(jnp.argmax(logits, axis=-1) == y)

    # The one-cycle peak: not read off a suggestion, but raced on held-out data.
    steps_per_epoch = len(train_data[0]) // batch_size
    choice = clrjax.find_schedule(
        loss_fn,
        variables["params"],
        train_data,
        val_data=val_data,
        val_metric=accuracy,
        total_steps=epochs * steps_per_epoch,
        batch_size=batch_size,
        optimizer=functools.partial(optax.sgd, momentum=0.9, nesterov=True),
        kinds=("one_cycle",),
        model=clrjax.Model(state=variables["batch_stats"]),
        search=clrjax.Search(range_test_steps=steps),
    )
    print(choice)
    print(f"1cycle max LR {choice.learning_rate:.3g} (find_schedule, {choice.decided_by})")

    tx = choice.optimizer()
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, batch_stats, opt_state, x, y):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, (x, y)
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    test_accuracy = jax.jit(accuracy)
    x_train, y_train = train_data
    key = jax.random.key(1)
    for epoch in range(1, epochs + 1):
        key, epoch_key = jax.random.split(key)
        order = jax.random.permutation(epoch_key, len(x_train))
        losses = []
        for idx in order[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size):
            params, batch_stats, opt_state, loss = train_step(
                params, batch_stats, opt_state, x_train[idx], y_train[idx]
            )
            losses.append(loss)
        acc = float(test_accuracy(params, batch_stats, (data.x_test, data.y_test)))
        loss = float(jnp.mean(jnp.stack(losses)))
        print(f"epoch {epoch:>2}: train loss {loss:.4f}, test accuracy {acc:.2%}")
    print(f"final test accuracy {acc:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
