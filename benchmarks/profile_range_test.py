"""Where the time of a range test goes, and the measurements behind ``strategy="auto"``'s rules.

Ablation (default): for each workload and K, rows doing the same training as
``bench_range_test.py`` with less and less machinery around the step:

* ``loop/scan``: K calls of one jitted ``lax.scan`` over all steps (the baseline);
* ``bare/vmap``: one jitted ``jax.vmap`` over the K lanes of that same scan,
  batches gathered beforehand, nothing else: the best a plain vmapped step does;
* ``bare/map``: ``lax.map`` over the lanes of that scan (lanes outside the steps);
* ``clrjax/<strategy>``: a whole ``clrjax.range_test`` call (batch gather by
  index, smoothing, divergence rule, host work, result object).

``--compiles``: each row's first call in a fresh process (``_cold.py``, as
``bench_range_test.py``'s cold rows) with ``JAX_LOG_COMPILES=1``: the seconds
XLA spent compiling each jitted function (the engine's ``init`` and ``run``,
the loop's ``run``), and the call's total.

``--compiler-options``: the run program that ``strategy="auto"`` compiles
(lowered once, for its first lane group) compiled ``--rounds`` times under each
of :data:`OPTION_SETS` in turn, JAX's caches cleared before each compile: the
median and fastest compile seconds, and the fastest of ``--rounds`` calls of
each compiled program (taking turns, on a fresh copy of the group's state):
the measurement behind ``CPU_COMPILER_OPTIONS`` in ``clrjax/_engine/program.py``.

``--calibrate``: for each workload and K, ``strategy="vmap"`` against
``"serial"`` with ``driver="scan"`` and ``"chunks"``, and ``"auto"``; with one
lane's step FLOPs and state bytes (the engine's footprint), to place the CPU
rules' thresholds (``SERIAL_STEP_FLOPS``, ``SERIAL_STATE_BYTES`` in
``clrjax/_engine/strategy.py``) and check what ``auto`` picks.

All rows are timed warm, taking turns (``bench_range_test.measure_warm``:
``--rounds`` rounds, each row called until it ran ``--min-time / --rounds``
seconds), so that load from other processes hits all rows alike; the tables
show the fastest and the median call. ``--matmuls`` times the 512-wide MLP's
matmul shapes against a large GEMM.

Run from the repository root::

    python benchmarks/profile_range_test.py
    python benchmarks/profile_range_test.py --calibrate            # ~10 min on 2 cores
    python benchmarks/profile_range_test.py --compiles --lanes 16  # ~5 min
    python benchmarks/profile_range_test.py --compiler-options     # ~3 min
    python benchmarks/profile_range_test.py --workloads mlp512 --lanes 16 --matmuls
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")

import jax
import jax.numpy as jnp
from _data import make_batches, weight_decays
from _rows import clrjax_range_test, loop_scan, single_run
from _workloads import make_workload
from bench_range_test import fastest_call, gemm_rate, measure_warm

from clrjax._engine import program, runner, strategy

CALIBRATION_ROWS = ("vmap/scan", "serial/scan", "vmap/chunks", "serial/chunks", "auto")
COMPILE_ROWS = (
    "loop/scan",
    "clrjax/vmap/scan",
    "clrjax/serial/scan",
    "clrjax/vmap/chunks",
    "clrjax/serial/chunks",
    "clrjax/auto",
)
# XLA:CPU options the engine's run program is compiled under (--compiler-options);
# every set names both options, since they are added to the engine's own.
OPTION_SETS = {
    "fusion emitters, LLVM level 3": {
        "xla_cpu_use_fusion_emitters": True,
        "xla_backend_optimization_level": 3,
    },
    "classic emitters, LLVM level 3": {
        "xla_cpu_use_fusion_emitters": False,
        "xla_backend_optimization_level": 3,
    },
    "classic emitters, LLVM level 2": {
        "xla_cpu_use_fusion_emitters": False,
        "xla_backend_optimization_level": 2,
    },
    "classic emitters, LLVM level 1": {
        "xla_cpu_use_fusion_emitters": False,
        "xla_backend_optimization_level": 1,
    },
}
_COMPILED = re.compile(r"Finished XLA compilation of jit\((\w+)\) in ([0-9.e-]+) sec")


def bare(workload, batches, wds, num_steps: int, how: str):
    """The K lanes of ``loop_scan``'s run in one program: ``vmap`` or ``lax.map``."""
    run = single_run(workload, num_steps)
    xs, ys = map(jnp.asarray, batches)

    def one(weight_decay):
        return run(workload.params, weight_decay, xs, ys)

    lanes = jax.jit(jax.vmap(one) if how == "vmap" else lambda w: jax.lax.map(one, w))
    wds = jnp.asarray(wds, jnp.float32)
    return lambda: lanes(wds)


def matmul_rates(k: int, repeats: int = 50) -> dict[str, float]:
    """GFLOP/s of the 512-wide MLP's matmul shapes: alone, K separate, K batched."""
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (k, 128, 512))
    w = jax.random.normal(key, (k, 512, 512))
    flops = 2 * 128 * 512 * 512
    x0, w0 = jnp.array(x[0]), jnp.array(w[0])
    shapes = {  # label: (function, matmuls per call, arguments)
        "128x512 @ 512x512, one": (jax.jit(jnp.matmul), 1, (x0, w0)),
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


def _print_rows(times: dict, base: str, ran: dict) -> None:
    print(
        f"  {'row':18s} {'fastest':>10s} {'median':>10s} {base + ' / row':>16s} "
        f"{'least CPU':>10s} {'(ratio)':>8s}"
    )
    for row, m in times.items():
        label = ran[row].get("strategy", "") if row in ran else ""
        print(
            f"  {row:18s} {m['steady'] * 1e3:8.2f}ms {m['median'] * 1e3:8.2f}ms "
            f"{times[base]['steady'] / m['steady']:15.2f}x {m['cpu'] * 1e3:8.2f}ms "
            f"{times[base]['cpu'] / m['cpu']:7.2f}x  {label}"
        )


def ablation(name: str, k: int, args) -> None:
    workload = make_workload(name)
    batches = make_batches(workload, args.steps, args.batch_size)
    wds = weight_decays(k)
    rows = {
        "loop/scan": loop_scan(workload, batches, wds, args.steps),
        "bare/vmap": bare(workload, batches, wds, args.steps, "vmap"),
        "bare/map": bare(workload, batches, wds, args.steps, "map"),
    }
    ran = {}
    for row in args.strategies.split(","):
        rows[f"clrjax/{row}"], ran[f"clrjax/{row}"] = clrjax_range_test(
            workload, wds, args.steps, args.batch_size, row
        )
    times = measure_warm(rows, args.rounds, args.min_time)
    print(f"\n{workload.description}: K={k}, {args.steps} steps, load {_load()}")
    _print_rows(times, "loop/scan", ran)


def calibrate(name: str, k: int, args) -> dict:
    """vmap vs serial (scan and chunks drivers) and auto for one workload and K."""
    workload = make_workload(name)
    wds = weight_decays(k)
    rows, ran = {}, {}
    for row in CALIBRATION_ROWS:
        rows[row], ran[row] = clrjax_range_test(workload, wds, args.steps, args.batch_size, row)
    runner._FOOTPRINTS.clear()
    rows["auto"]()  # traces the footprint (auto's rules need it)
    (fp,) = runner._FOOTPRINTS.values()
    times = measure_warm(rows, args.rounds, args.min_time)
    best = {row: m["steady"] for row, m in times.items()}
    cpu = {row: m["cpu"] for row, m in times.items()}
    work = fp.flops * args.steps * k / strategy.CPU_FLOPS_PER_SECOND
    print(
        f"\n{workload.description}: K={k}, {args.steps} steps, load {_load()}; one lane's step "
        f"{fp.flops / 1e6:.2f} MFLOP, state {fp.state_bytes / 2**20:.3f} MiB "
        f"(all lanes {fp.state_bytes * k / 2**20:.1f} MiB); estimated {work:.2f} s at "
        f"CPU_FLOPS_PER_SECOND"
    )
    _print_rows(times, "vmap/scan", ran)
    return {
        "name": name,
        "k": k,
        "flops": fp.flops,
        "state": fp.state_bytes * k,
        "serial_gain": best["vmap/scan"] / best["serial/scan"],
        "serial_gain_cpu": cpu["vmap/scan"] / cpu["serial/scan"],
        "chunks_cost": best["serial/chunks"] / best["serial/scan"],
        "vmap_chunks_cost": best["vmap/chunks"] / best["vmap/scan"],
        "auto": ran["auto"]["strategy"],
        "auto_vs_best": best["auto"] / min(best.values()),
    }


def compile_times(name: str, k: int, args) -> None:
    """Per row, in fresh processes: XLA seconds per jitted function, and the first call's."""
    env = {**os.environ, "JAX_LOG_COMPILES": "1"}
    cold = Path(__file__).resolve().parent / "_cold.py"
    runs = {row: [] for row in COMPILE_ROWS}
    for _ in range(args.rounds):
        for row in COMPILE_ROWS:
            command = [sys.executable, str(cold), row, name]
            command += [str(k), str(args.steps), str(args.batch_size)]
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            seconds = collections.Counter()
            for fn, sec in _COMPILED.findall(done.stderr):
                seconds[fn if fn in ("init", "run") else "other"] += float(sec)
            call = json.loads(done.stdout.strip().splitlines()[-1])
            runs[row].append({**seconds, "call": call["call"], "strategy": call["strategy"]})
    print(f"\n{make_workload(name).description}: K={k}, {args.steps} steps, load {_load()}")
    print("  XLA compile seconds per jitted function, and the first call (medians of rounds)")
    print(f"  {'row':22s} {'init':>6s} {'run':>6s} {'other':>6s} {'call':>6s}  strategy")
    for row, calls in runs.items():
        med = {
            key: statistics.median(c.get(key, 0.0) for c in calls)
            for key in ("init", "run", "other", "call")
        }
        print(
            f"  {row:22s} {med['init']:6.2f} {med['run']:6.2f} {med['other']:6.2f} "
            f"{med['call']:6.2f}  {calls[0]['strategy']}"
        )


def _lowered_run(name: str, k: int, args):
    """``auto``'s run program lowered for its first lane group, that group's arguments, strategy."""
    captured = {}
    drive = runner.drive

    def spy(prog, groups, shared, plan, **kw):
        group = groups[0]
        xs, lane_xs = plan.chunk(0, kw["chunk_size"])
        own = jax.tree.map(lambda a: a[:, group.lanes], lane_xs)
        carry = jax.tree.map(jnp.copy, group.carry)  # the run donates the group's own
        captured["args"] = (carry, group.consts, shared, xs, own)
        captured["lowered"] = prog.run.lower(*captured["args"])
        return drive(prog, groups, shared, plan, **kw)

    runner.drive = spy
    try:
        workload = make_workload(name)
        run, info = clrjax_range_test(
            workload, weight_decays(k), args.steps, args.batch_size, "auto"
        )
        jax.block_until_ready(run())
    finally:
        runner.drive = drive
    return captured["lowered"], captured["args"], info["strategy"]


def compiler_options(name: str, k: int, args) -> None:
    """Compile and call seconds of ``auto``'s run program under each of :data:`OPTION_SETS`."""
    lowered, (carry, *rest), ran = _lowered_run(name, k, args)
    seconds = {label: [] for label in OPTION_SETS}
    calls = {label: [] for label in OPTION_SETS}
    for _ in range(args.rounds):
        for label, options in OPTION_SETS.items():
            jax.clear_caches()
            begin = time.perf_counter()
            compiled = lowered.compile(options)
            seconds[label].append(time.perf_counter() - begin)
            fresh = jax.block_until_ready(jax.tree.map(jnp.copy, carry))
            begin = time.perf_counter()
            jax.block_until_ready(compiled(fresh, *rest))
            calls[label].append(time.perf_counter() - begin)
    print(
        f"\n{make_workload(name).description}: K={k}, {args.steps} steps, auto ran {ran}; "
        f"load {_load()}"
    )
    print(f"  {'options':32s} {'compile: median':>16s} {'fastest':>8s} {'call: fastest':>13s}")
    for label in OPTION_SETS:
        engine = " (the engine's)" if OPTION_SETS[label] == program.CPU_COMPILER_OPTIONS else ""
        print(
            f"  {label:32s} {statistics.median(seconds[label]):12.3f} s "
            f"{min(seconds[label]):6.3f} s {min(calls[label]) * 1e3:9.2f} ms{engine}"
        )


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibrate", action="store_true", help="vmap vs serial, per workload")
    parser.add_argument("--compiles", action="store_true", help="compile seconds, fresh processes")
    parser.add_argument(
        "--compiler-options", action="store_true", help="XLA:CPU option sets, compile and call"
    )
    parser.add_argument("--workloads", default=None)
    parser.add_argument("--lanes", default=None, help="K values, comma-separated")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=None, help="default 10 (--compiles: 2)")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per row (all rounds)")
    parser.add_argument("--strategies", default="vmap,serial,auto", help="ablation clrjax rows")
    parser.add_argument("--matmuls", action="store_true", help="matmul rates (512-wide MLP)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.compiles else 10
    default = "logreg,mlp64,mlp128,mlp256,mlp512" if args.calibrate else "logreg,mlp64,mlp512"
    names = list(filter(None, (args.workloads or default).split(",")))
    lanes = [int(k) for k in (args.lanes or ("4,16,64" if args.calibrate else "16")).split(",")]

    print(f"backend {jax.default_backend()}, {os.cpu_count()} CPUs, jax {jax.__version__}")
    print(f"load average at start: {_load()}")
    summary = []
    for name in names:
        for k in lanes:
            if args.compiles:
                compile_times(name, k, args)
            elif args.compiler_options:
                compiler_options(name, k, args)
            elif args.calibrate:
                summary.append(calibrate(name, k, args))
            else:
                ablation(name, k, args)
    if summary:
        print(
            "\ncalibration: serial gain = vmap/scan / serial/scan (> 1: serial faster; fastest "
            "calls, and least CPU time); chunks cost = chunks time / scan time"
        )
        print(
            f"  {'workload':9s} {'K':>3s} {'MFLOP/step':>10s} {'state MiB':>9s} "
            f"{'serial gain (cpu)':>18s} {'chunks cost (serial, vmap)':>27s}  auto ran (vs best)"
        )
        for s in summary:
            print(
                f"  {s['name']:9s} {s['k']:3d} {s['flops'] / 1e6:10.2f} {s['state'] / 2**20:9.1f} "
                f"{s['serial_gain']:10.2f}x ({s['serial_gain_cpu']:4.2f}x) "
                f"{s['chunks_cost']:12.2f}x "
                f"{s['vmap_chunks_cost']:12.2f}x  {s['auto']} ({s['auto_vs_best']:.2f}x)"
            )
    if args.matmuls:
        print(f"\nlarge GEMM (2048^2): {gemm_rate(2048) / 1e9:.1f} GFLOP/s")
        for label, rate in matmul_rates(lanes[0]).items():
            print(f"  {label:40s} {rate:7.1f} GFLOP/s")
    print(f"\nload average at end: {_load()}")


if __name__ == "__main__":
    main()
