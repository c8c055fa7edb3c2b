"""LR range test on scikit-learn's digits over Smith's weight-decay grid.

Trains a 64-64-10 MLP (plain JAX) as four lanes of one compiled program, one
per weight decay in (1e-3, 1e-4, 1e-5, 0), and prints each lane's suggested
learning rate and the step (and LR) at which it diverged.

Run: python examples/digits_range_test.py [--plot out.png]
"""

import argparse
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import clrjax


def init_mlp(key, sizes=(64, 64, 10)):
    params = []
    keys = jax.random.split(key, len(sizes) - 1)
    for k, (n_in, n_out) in zip(keys, itertools.pairwise(sizes), strict=True):
        w = jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in)
        params.append({"w": w, "b": jnp.zeros(n_out)})
    return params


def loss_fn(params, batch):
    x, y = batch
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    logits = x @ params[-1]["w"] + params[-1]["b"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--plot", help="save the curves to this image file")
    args = parser.parse_args()

    digits = load_digits()
    x = (digits.data - digits.data.mean(0)) / (digits.data.std(0) + 1e-8)
    data = (x.astype(np.float32), digits.target.astype(np.int32))

    result = clrjax.range_test(
        loss_fn,
        init_mlp(jax.random.key(0)),
        data,
        batch_size=128,
        num_steps=args.steps,
        start_lr=1e-4,
        end_lr=10.0,
        grid={"weight_decay": [1e-3, 1e-4, 1e-5, 0.0]},
    )
    suggested = result.suggest("valley")
    print(f"strategy: {result.strategy}, {result.num_lanes} lanes x {result.num_steps} steps")
    print(f"{'lane':>4}  {'hyperparameters':<22} {'suggested LR':>12}  diverged at")
    for i in range(result.num_lanes):
        d = result.diverged_at[i]
        where = f"step {d} (lr {result.lrs[d]:.3g})" if d >= 0 else "-"
        print(f"{i:>4}  {result.lane_label(i):<22} {suggested[i]:>12.3g}  {where}")
    best = result.best()
    print(f"best lane: {best.index} ({result.lane_label(best.index)}), lr {best.lr:.3g}")
    if args.plot:
        import matplotlib.pyplot as plt

        result.plot()
        plt.savefig(args.plot)


if __name__ == "__main__":
    main()
