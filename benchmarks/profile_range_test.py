"""Where the time of a vmapped range test goes: an ablation, rows timed interleaved.

For each workload and K, the rows below do the same training (K weight-decay
lanes, ``--steps`` steps, SGD momentum 0.9, exponential LR ramp, as in
``bench_range_test.py``) with less and less machinery around the step:

* ``loop/scan``: K calls of one jitted ``lax.scan`` over all steps (the baseline);
* ``bare/vmap``: one jitted ``jax.vmap`` over the K lanes of that same scan,
  batches gathered beforehand, nothing else: the best a plain vmapped step does;
* ``bare/map``: ``lax.map`` over the lanes of that scan (lanes outside the steps);
* ``clrjax/<lanes>``: a whole ``clrjax.range_test`` call (batch gather by index,
  smoothing, divergence rule, host work, result object).

After a first call of each row from empty caches, the rows are timed
round-robin (``--rounds`` rounds, one call of each row per round, with
``bench_range_test``'s ``_measure_rows``) so that load from other processes
hits all rows alike; the table shows the fastest and the median call. With
``--matmuls`` it also times the matmul shapes of the 512-wide MLP against a
large GEMM.

Run from the repository root::

    python benchmarks/profile_range_test.py
    python benchmarks/profile_range_test.py --workloads mlp512 --lanes 16 --matmuls
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")

import jax
import jax.numpy as jnp
import numpy as np
from _workloads import make_batches, make_workload
from bench_range_test import (
    _measure_rows,
    clrjax_range_test,
    fastest_call,
    gemm_rate,
    loop_scan,
    single_run,
)


def bare(workload, batches, weight_decays, num_steps: int, how: str):
    """The K lanes of ``loop_scan``'s run in one program: ``vmap`` or ``lax.map``."""
    run = single_run(workload, num_steps)
    xs, ys = map(jnp.asarray, batches)

    def one(weight_decay):
        return run(workload.params, weight_decay, xs, ys)

    lanes = jax.jit(jax.vmap(one) if how == "vmap" else lambda wds: jax.lax.map(one, wds))
    wds = jnp.asarray(weight_decays, jnp.float32)
    return lambda: lanes(wds)


def matmul_rates(k: int, repeats: int = 50) -> dict[str, float]:
    """GFLOP/s of the 512-wide MLP's matmul shapes: alone, K separate, K batched."""
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (k, 128, 512))
    w = jax.random.normal(key, (k, 512, 512))
    flops = 2 * 128 * 512 * 512
    shapes = {  # label: (function, matmuls per call, arguments)
        "128x512 @ 512x512, one": (jax.jit(jnp.matmul), 1, (x[0], w[0])),
        f"same, {k} separate in one program": (
            jax.jit(lambda a, b: [a[i] @ b[i] for i in range(k)]),
            k,
            (x, w),
        ),
        f"same, {k} batched (vmap)": (
            jax.jit(lambda a, b: jnp.einsum("kbi,kio->kbo", a, b)),
            k,
            (x, w),
        ),
    }
    return {
        label: count * flops / fastest_call(fn, args, repeats) / 1e9
        for label, (fn, count, args) in shapes.items()
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="logreg,mlp64,mlp512")
    parser.add_argument("--lanes", type=int, default=16, help="K")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--strategies", default="vmap,serial,auto")
    parser.add_argument("--matmuls", action="store_true", help="matmul rates (512-wide MLP)")
    args = parser.parse_args(argv)

    print(f"backend {jax.default_backend()}, {os.cpu_count()} CPUs, jax {jax.__version__}")
    print(f"load average at start: {os.getloadavg()}")
    k = args.lanes
    weight_decays = np.geomspace(1e-5, 1e-2, k)
    for name in filter(None, args.workloads.split(",")):
        workload = make_workload(name)
        batches = make_batches(workload, args.steps, args.batch_size)
        rows = {
            "loop/scan": loop_scan(workload, batches, weight_decays, args.steps),
            "bare/vmap": bare(workload, batches, weight_decays, args.steps, "vmap"),
            "bare/map": bare(workload, batches, weight_decays, args.steps, "map"),
        }
        ran = {}
        for lanes in args.strategies.split(","):
            made = clrjax_range_test(workload, weight_decays, args.steps, args.batch_size, lanes)
            rows[f"clrjax/{lanes}"], ran[f"clrjax/{lanes}"] = made
        # Each row compiles cold first; then one call per row per round, rows taking turns.
        times = _measure_rows(rows, args.rounds, min_time=0.0)
        loop = times["loop/scan"]["steady"]
        print(f"\n{workload.description}: K={k}, {args.steps} steps, {args.rounds} rounds")
        print(f"  {'row':18s} {'fastest':>10s} {'median':>10s} {'loop / row':>11s}")
        for row, m in times.items():
            label = ran[row].get("strategy", "") if row in ran else ""
            print(
                f"  {row:18s} {m['steady'] * 1e3:8.2f}ms {m['median'] * 1e3:8.2f}ms "
                f"{loop / m['steady']:10.2f}x  {label}"
            )
    if args.matmuls:
        print(f"\nlarge GEMM (2048^2): {gemm_rate(2048) / 1e9:.1f} GFLOP/s")
        for label, rate in matmul_rates(k).items():
            print(f"  {label:40s} {rate:7.1f} GFLOP/s")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
