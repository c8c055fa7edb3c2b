"""An Equinox module through clrjax's range test, as params and inside a train state.

Shows:

* an ``eqx.Module`` passed as ``params`` to :func:`clrjax.range_test`, with no
  ``eqx.partition``: its floating arrays are trained (the optimizer sees them
  alone) and its other leaves (the activation function, Dropout's rate and
  flag) are held fixed; ``loss_fn`` gets the whole module back;
* three weight decays and two seeds as lanes of one compiled program, the
  seeds reaching Dropout through ``loss_fn``'s key (``clrjax.Model(takes_rng=True)``);
* the same module inside a train state ``(model, opt_state)`` with your own
  ``eqx.filter_value_and_grad`` train step, through
  :func:`clrjax.range_test_step` (the optimizer built with
  ``optax.inject_hyperparams``, so that the learning rate lives in the state).

The data are scikit-learn's 8x8 digits (offline). Usage::

    python examples/equinox_range_test.py           # ~20 s on 2 CPU cores
    python examples/equinox_range_test.py --quick   # tiny settings (used by the tests)
"""

from __future__ import annotations

import argparse
import sys

import equinox as eqx
import jax
import optax

import clrjax
from clrjax import demo

WEIGHT_DECAYS = (1e-2, 1e-4, 0.0)


class Net(eqx.Module):
    """An MLP with Dropout on its input."""

    dropout: eqx.nn.Dropout
    mlp: eqx.nn.MLP

    def __init__(self, n_in: int, hidden: int, n_out: int, *, key: jax.Array):
        self.dropout = eqx.nn.Dropout(0.1)
        self.mlp = eqx.nn.MLP(n_in, n_out, hidden, depth=2, key=key)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.mlp(self.dropout(x, key=key, inference=key is None))


def cross_entropy(model: Net, batch: tuple[jax.Array, jax.Array], key: jax.Array) -> jax.Array:
    x, y = batch
    logits = jax.vmap(lambda xi, k: model(xi, key=k))(x, jax.random.split(key, len(x)))
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    args = parser.parse_args(argv)
    steps, hidden = (30, 16) if args.quick else (150, 128)

    data = demo.load_dataset("digits")
    train = (data.x_train, data.y_train)
    build = lambda: Net(data.x_train.shape[1], hidden, data.num_classes, key=jax.random.key(0))
    model = build()
    common = dict(
        batch_size=64,
        num_steps=steps,
        start_lr=1e-5,
        end_lr=10.0,
        model=clrjax.Model(takes_rng=True),
        execution=clrjax.Execution(progress=False),
    )

    # 1. The module as params: 3 weight decays x 2 seeds = 6 lanes.
    result = clrjax.range_test(
        cross_entropy,
        model,
        train,
        optimizer=optax.adamw,
        grid={"weight_decay": WEIGHT_DECAYS},
        seeds=[0, 1],
        **common,
    )
    suggested = result.suggest()
    print(f"range_test: {result.num_lanes} lanes x {steps} steps ({result.strategy})")
    for i in range(result.num_lanes):
        print(f"  {result.lane_label(i):<26} minimum LR {suggested[i]:.3g}")

    # 2. The module inside a train state, with your own train step.
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=1e-4)
    state = (model, tx.init(eqx.filter(model, eqx.is_inexact_array)))

    def train_step(state, batch, key):
        model, opt_state = state
        loss, grads = eqx.filter_value_and_grad(cross_entropy)(model, batch, key)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (eqx.apply_updates(model, updates), opt_state), {"loss": loss}

    stepped = clrjax.range_test_step(
        train_step, state, train, grid={"weight_decay": WEIGHT_DECAYS}, **common
    )
    for i, lr in enumerate(stepped.suggest()):
        print(f"range_test_step: {stepped.lane_label(i):<18} minimum LR {lr:.3g}")

    # Neither test changed the module: its arrays are the ones it was built with.
    print(f"module unchanged: {bool(eqx.tree_equal(model, build()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
