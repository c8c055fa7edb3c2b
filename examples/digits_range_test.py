"""LR range test on scikit-learn's digits over Smith's weight-decay grid.

Trains a 64-64-10 MLP (:func:`clrjax.demo.mlp_loss`, plain JAX) as four lanes
of one compiled program, one per weight decay in (1e-3, 1e-4, 1e-5, 0), and
prints each lane's suggested learning rate (the default suggestion,
``"minimum"``: a tenth of the LR at the lowest smoothed loss) and the step
(and LR) at which it diverged.

A suggestion is a reading of the curve, not a schedule: to pick the schedule
to train with (one-cycle's peak, or a per-epoch decay), let
:func:`clrjax.find_schedule` race the candidates the curve proposes
(``examples/smith_workflow.py``, ``docs/find_schedule.md``).

Run: python examples/digits_range_test.py [--plot out.png]   # ~35 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys

import jax

import clrjax
from clrjax import demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--plot", help="save the curves to this image file")
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    args = parser.parse_args(argv)

    data = demo.load_dataset("digits")
    result = clrjax.range_test(
        demo.mlp_loss,
        demo.init_mlp(jax.random.key(0), (64, 64, 10)),
        (data.x_train, data.y_train),
        batch_size=128,
        num_steps=30 if args.quick else args.steps,
        start_lr=1e-4,
        end_lr=10.0,
        grid={"weight_decay": [1e-3, 1e-4, 1e-5, 0.0]},
        execution=clrjax.Execution(progress=False),
    )
    suggested = result.suggest()  # the default method, "minimum"
    print(f"strategy: {result.strategy}, {result.num_lanes} lanes x {result.num_steps} steps")
    print(f"{'lane':>4}  {'hyperparameters':<22} {'minimum LR':>12}  diverged at")
    for i in range(result.num_lanes):
        d = result.diverged_at[i]
        where = f"step {d} (lr {result.lrs[d]:.3g})" if d >= 0 else "-"
        print(f"{i:>4}  {result.lane_label(i):<22} {suggested[i]:>12.3g}  {where}")
    best = result.best()
    label = result.lane_label(best.index)
    print(f"lowest loss: lane {best.index} ({label}), minimum LR {best.lr:.3g}")
    if args.plot:
        import matplotlib.pyplot as plt

        result.plot()
        plt.savefig(args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
