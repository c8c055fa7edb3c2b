"""Time to the first answer and warm speed of K candidate runs as lanes of one range test.

Every row trains ``K`` lanes for ``--steps`` steps of SGD (momentum 0.9,
coupled weight decay) with an exponential learning-rate ramp, each lane with
its own weight decay, on batches of ``--batch-size``:

* ``loop/scan``: a Python loop over the K runs, each one call of a jitted
  ``lax.scan`` over all steps (compiled once, weight decay passed as an argument);
* ``loop/step``: a Python loop over the K runs and the steps, calling one jitted
  single-lane train step (what most training scripts do);
* ``torch-lr-finder/<n>t``: ``LRFinder.range_test`` run K times (only when
  ``torch`` and ``torch_lr_finder`` import) with ``torch.set_num_threads(n)``,
  same model and optimizer, ``diverge_th=inf`` so every run does all steps;
* ``clrjax/<strategy>``: one ``clrjax.range_test`` call with
  ``execution=clrjax.Execution(strategy=...)``: ``auto`` (the default: rules),
  ``vmap``, ``serial``, ``map`` (a quarter of the lanes at a time) or ``timed``
  (vmap and serial timed on the first chunk).

**Cold** (what a user waits for: a range test usually runs once): each row's
first call in a fresh process (``_cold.py``: imports, data, one call,
``block_until_ready``), the wall time of the whole process measured from
outside; ``--cold-repeats`` rounds, the rows taking turns, the median reported
(with the child's CPU time, less sensitive to other processes' load, and its
own split into imports, data and the call).

**Warm** (a call that reuses compiled programs): in this process, after one
call of each row, ``--repeats`` rounds, each row called in every round until
it has run for ``--min-time / --repeats`` seconds, so that load from other
processes hits all rows alike; a row's time is its fastest call.

Run from the repository root (the scripts put the repository first on
``sys.path``); ``pip install -e ".[bench]"`` for the torch rows::

    python benchmarks/bench_range_test.py            # CPU: ~15 min on 2 cores
    python benchmarks/bench_range_test.py --quick    # ~2 min
    python benchmarks/bench_range_test.py --no-cold --workloads mlp512 --lanes 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
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
import numpy as np
import optax
from _bytecode import compile_sources
from _data import MOMENTUM, START_LR, WORKLOADS, make_batches, weight_decays
from _rows import clrjax_range_test, loop_scan, loop_step
from _torch_rows import torch_available, torch_lr_finder_runs
from _workloads import make_workload

HERE = Path(__file__).resolve().parent
STRATEGIES = ("auto", "vmap", "serial", "map", "timed")
COLD_ROWS = ("clrjax/auto", "loop/scan", "torch-lr-finder/2t")
GEMM = "large GEMM"
# CPU defaults (on accelerators every workload runs K in 1, 4, 16, 64 and 100 steps).
CPU_LANES = {"logreg": "4,16,64", "mlp64": "4,16,64", "mlp512": "4,16", "cnn": "4,16"}
CPU_STEPS = {"cnn": 20}
CPU_WORKLOADS = "logreg,mlp64,mlp512,cnn"
CPU_COLD = "logreg:16,mlp64:16,mlp512:16"
ACCELERATOR_COLD = CPU_COLD + ",cifar_cnn:64"


# ----------------------------------------------------------------------------- measuring


def _device_peak_mb() -> float:
    """The device's peak bytes in use (GPU/TPU), NaN where JAX does not report it (CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else math.nan


def measure_warm(rows: dict, repeats: int, min_time: float) -> dict[str, dict[str, float]]:
    """Times every ``rows[name]()`` warm, the rows taking turns.

    One call of each row first (compilation, and ``timed``'s choice); then
    ``repeats`` rounds, in each of which every row in turn is called until it
    has run for ``min_time / repeats`` seconds (at least once). The fastest
    call is the row's time (``steady``); the median is kept too, and the least
    CPU time of this process over the calls (``cpu``: all threads; unlike the
    wall time it hardly grows while other processes hold the cores).
    """
    for fn in rows.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in rows}
    cpu = {name: [] for name in rows}
    for _ in range(repeats):
        for name, fn in rows.items():
            spent = 0.0
            while spent == 0.0 or spent < min_time / repeats:
                start, start_cpu = time.perf_counter(), time.process_time()
                jax.block_until_ready(fn())
                elapsed = time.perf_counter() - start
                cpu[name].append(time.process_time() - start_cpu)
                times[name].append(elapsed)
                spent += elapsed
    return {
        name: {
            "steady": min(times[name]),
            "median": float(np.median(times[name])),
            "cpu": min(cpu[name]),
            "calls": len(times[name]),
            "mem_mb": _device_peak_mb(),
        }
        for name in rows
    }


def _cold_call(row: str, name: str, k: int, steps: int, batch_size: int) -> dict:
    """One fresh process running ``row``'s first call; wall and CPU seconds from outside."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(HERE / "_cold.py"), row, name, str(k), str(steps), str(batch_size)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"cold {row} {name} K={k} failed:\n{done.stderr[-2000:]}")
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, **phases}


def measure_cold(cases, rows, repeats: int, steps_of, batch_size: int) -> dict:
    """``{(name, k): {row: medians}}`` over ``repeats`` rounds of fresh processes.

    In each round every case runs every row once, the rows' order rotated from
    round to round; the medians of the wall time, CPU time and the child's
    phases are reported. clrjax's modules are byte-compiled first, as an
    installed package's are (``_bytecode.py``).
    """
    compile_sources()
    runs = {case: {row: [] for row in rows} for case in cases}
    for r in range(repeats):
        for name, k in cases:
            order = rows[r % len(rows) :] + rows[: r % len(rows)]
            for row in order:
                runs[(name, k)][row].append(_cold_call(row, name, k, steps_of(name), batch_size))
    table = {}
    for case, by_row in runs.items():
        table[case] = {}
        for row, calls in by_row.items():
            numbers = [key for key in calls[0] if key != "strategy"]
            table[case][row] = {key: statistics.median(c[key] for c in calls) for key in numbers}
            table[case][row]["walls"] = [c["wall"] for c in calls]
            table[case][row]["strategy"] = calls[0]["strategy"]
    return table


def gemm_row(n: int):
    """A row (a function of no arguments) computing one ``n x n`` float32 matmul."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n))
    matmul = jax.jit(jnp.matmul)
    return lambda: matmul(a, b)


def gemm_rate(n: int, repeats: int = 20) -> float:
    """FLOP/s of an ``n x n`` float32 matmul (the machine's large-GEMM rate)."""
    return 2 * n**3 / fastest_call(gemm_row(n), (), repeats)


def fastest_call(fn, args: tuple, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls ``fn(*args)``, after a first (compiling) one."""
    jax.block_until_ready(fn(*args))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


# ----------------------------------------------------------------------------- report


def _versions() -> str:
    import jaxlib

    parts = [f"python {platform.python_version()}", f"jax {jax.__version__}"]
    parts += [f"jaxlib {jaxlib.__version__}", f"optax {optax.__version__}"]
    if torch_available():
        from importlib.metadata import version

        import torch

        parts += [f"torch {torch.__version__}", f"torch-lr-finder {version('torch-lr-finder')}"]
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
        if commit:
            parts.append(f"clrjax at {commit}")
    return ", ".join(parts)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _ratio(base: float | None, value: float) -> str:
    return f"{base / value:6.2f}x" if base else "     -"


def _faster_loop(rows: dict, key: str) -> float | None:
    return min((m[key] for r, m in rows.items() if r.startswith("loop/")), default=None)


def _torch_row(rows: dict, key: str) -> float | None:
    return min((m[key] for r, m in rows.items() if r.startswith("torch")), default=None)


def print_cold(table: dict) -> None:
    print(
        "\nCOLD: each row's first call in a fresh process (median of rounds): wall s of the whole "
        "process, its CPU s, the child's imports / data / call (compile included); ratios of the "
        "wall times (> 1: clrjax row faster)"
    )
    for (name, k), rows in table.items():
        loop_s, torch_s = _faster_loop(rows, "wall"), _torch_row(rows, "wall")
        for row, m in rows.items():
            walls = " ".join(f"{w:.1f}" for w in m["walls"])
            print(
                f"  {name:<7} K={k:<3d} {row:<20} wall {m['wall']:7.2f} s  cpu {m['cpu']:6.2f} s  "
                f"imports {m['imports']:5.2f}  data {m['data']:5.2f}  call {m['call']:6.2f}  "
                f"vs loop {_ratio(loop_s, m['wall'])}  vs torch {_ratio(torch_s, m['wall'])}  "
                f"[{walls}] {m['strategy']}"
            )
    sys.stdout.flush()


def print_warm(name: str, k: int, rows: dict, flops: float, gemm: float, ran: dict) -> None:
    loop_s, torch_s = _faster_loop(rows, "steady"), _torch_row(rows, "steady")
    print(f"  {GEMM:<20} K={k:<3d} {gemm / 1e9:.1f} GFLOP/s (taking turns with these rows)")
    for row, m in rows.items():
        mem = f"  mem {m['mem_mb']:6.1f} MB" if not math.isnan(m["mem_mb"]) else ""
        label = f"  ran {ran[row].get('strategy')}" if row in ran else ""
        print(
            f"  {row:<20} K={k:<3d} {m['steady']:8.4f} s  median {m['median']:8.4f} s  "
            f"cpu {m['cpu']:8.4f} s  "
            f"{flops / m['steady'] / 1e9:6.1f} GFLOP/s {flops / m['steady'] / gemm:6.1%}  "
            f"vs loop {_ratio(loop_s, m['steady'])}  vs torch {_ratio(torch_s, m['steady'])}"
            f"{mem}{label}"
        )
    sys.stdout.flush()


def print_targets(cold: dict, warm: dict) -> None:
    """The issue's targets against this run's ratios."""
    print("\ntargets (ratios from this run):")

    def check(label: str, value: str, ok: bool) -> None:
        print(f"  [{'met ' if ok else 'MISS'}] {label}: {value}")

    for (name, k), rows in cold.items():
        if "clrjax/auto" not in rows or name not in ("mlp64", "mlp512"):
            continue
        auto = rows["clrjax/auto"]["wall"]
        if "loop/scan" in rows:
            loop = rows["loop/scan"]["wall"]
            check(f"cold {name} K={k}: auto <= loop", f"loop/auto {loop / auto:.2f}x", auto <= loop)
        torch_s = _torch_row(rows, "wall")
        if torch_s:
            check(
                f"cold {name} K={k}: >= 1.2x faster than torch-lr-finder",
                f"{torch_s / auto:.2f}x",
                torch_s >= 1.2 * auto,
            )
    for (name, k), (rows, flops, gemm, ran) in warm.items():
        if "clrjax/auto" not in rows:
            continue
        auto = rows["clrjax/auto"]["steady"]
        loop = _faster_loop(rows, "steady")
        if loop:
            label = f"warm {name} K={k}: auto never slower than the loop"
            check(label, f"{loop / auto:.2f}x", auto <= loop)
        # Rows that ran auto's own program differ from it by noise only: left out.
        program = {r: info.get("strategy") for r, info in ran.items()}
        ours = {
            r: m["steady"]
            for r, m in rows.items()
            if r == "clrjax/auto"
            or (r.startswith("clrjax/") and program.get(r) != program.get("clrjax/auto"))
        }
        best = min(ours, key=ours.get)
        check(
            f"warm {name} K={k}: auto within 10% of the best other strategy ({best})",
            f"{auto / ours[best]:.2f}x",
            auto <= 1.1 * ours[best],
        )
        if name == "logreg" and k == 16 and loop:
            check("warm logreg K=16: >= 2x the loop", f"{loop / auto:.2f}x", loop >= 2 * auto)
        if name == "mlp512" and k == max(kk for nn, kk in warm if nn == "mlp512"):
            rate = flops / auto
            check(
                f"warm mlp512 K={k}: >= 70% of the large-GEMM rate",
                f"{rate / 1e9:.1f} GFLOP/s = {rate / gemm:.0%}",
                rate >= 0.7 * gemm,
            )


# ----------------------------------------------------------------------------- main


def _cases(spec: str) -> list[tuple[str, int]]:
    cases = []
    for item in filter(None, spec.split(",")):
        name, _, k = item.partition(":")
        cases.append((name, int(k or 16)))
    return cases


def _warm_rows(name: str, k: int, steps: int, args, on_cpu: bool, with_torch: bool):
    """The rows of one workload and K, and ``result.strategy`` holders of the clrjax rows."""
    workload = make_workload(name)
    batches = make_batches(workload, steps, args.batch_size)
    wds = weight_decays(k)
    convolutional = name in ("cnn", "cifar_cnn")
    cpu_cnn = convolutional and on_cpu and not args.all
    fns, ran = {}, {}
    if not cpu_cnn:  # a convolution inside lax.scan is ~10x slower on XLA:CPU
        fns["loop/scan"] = loop_scan(workload, batches, wds, steps)
    if not args.quick:
        fns["loop/step"] = loop_step(workload, batches, wds, steps)
    if with_torch and k <= args.torch_max_lanes:
        for threads in map(int, args.torch_threads.split(",")):
            fns[f"torch-lr-finder/{threads}t"] = torch_lr_finder_runs(
                workload, wds, steps, args.batch_size, threads
            )
    for strategy in filter(None, args.strategies.split(",")):
        if cpu_cnn and strategy in ("serial", "map"):
            continue  # serial needs a looping driver; map loops around the convolutions
        fns[f"clrjax/{strategy}"], ran[f"clrjax/{strategy}"] = clrjax_range_test(
            workload, wds, steps, args.batch_size, strategy
        )
    return workload, fns, ran


def main(argv=None):
    on_cpu = jax.default_backend() == "cpu"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~2 min check (fewer rows, K=16)")
    parser.add_argument("--workloads", default=None, help=f"warm, comma-separated: {WORKLOADS}")
    parser.add_argument("--lanes", default=None, help="warm K values (default: per workload)")
    parser.add_argument("--steps", type=int, default=None, help="default 100 (CNN on CPU: 20)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="warm rounds")
    parser.add_argument("--min-time", type=float, default=1.0, help="warm seconds per row")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="clrjax warm rows")
    parser.add_argument("--cold", default=None, help="cold cases name:K,... ('' for none)")
    parser.add_argument("--cold-rows", default=",".join(COLD_ROWS))
    parser.add_argument("--cold-repeats", type=int, default=3)
    parser.add_argument("--no-cold", action="store_true")
    parser.add_argument("--no-warm", action="store_true")
    parser.add_argument("--no-torch", action="store_true", help="skip torch-lr-finder rows")
    parser.add_argument("--torch-threads", default="2", help="warm torch rows, e.g. 2,1")
    parser.add_argument("--torch-max-lanes", type=int, default=16, help="largest warm K for torch")
    parser.add_argument("--gemm-size", type=int, default=2048 if on_cpu else 8192)
    parser.add_argument("--all", action="store_true", help="CPU: CIFAR CNN, every CNN row")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.min_time, args.cold_repeats = 3, 0.3, 1
        if args.strategies == ",".join(STRATEGIES):
            args.strategies = "auto,vmap,serial"
        args.workloads = args.workloads or "logreg,mlp64,mlp512"
        args.lanes = args.lanes or "16"
    with_torch = not args.no_torch and torch_available()

    def steps_of(name: str) -> int:
        return args.steps or (CPU_STEPS.get(name, 100) if on_cpu and not args.all else 100)

    gemm = gemm_rate(args.gemm_size)
    print(f"machine: {_cpu_model()}, {os.cpu_count()} CPUs; backend {jax.default_backend()}")
    print(f"devices: {jax.devices()}")
    print(f"versions: {_versions()}")
    print(f"load average at start: {_load()}")
    print(f"large GEMM ({args.gemm_size}^2 float32) at the start: {gemm / 1e9:.1f} GFLOP/s")
    print(
        f"task: batch {args.batch_size}, SGD momentum {MOMENTUM}, exp LR ramp from {START_LR:g}, "
        "K weight-decay lanes in geomspace(1e-5, 1e-2, K)"
    )
    if not with_torch:
        print("torch-lr-finder rows: skipped (torch/torch_lr_finder not importable or --no-torch)")

    cold = {}
    if not args.no_cold:
        spec = args.cold if args.cold is not None else (CPU_COLD if on_cpu else ACCELERATOR_COLD)
        rows = [r for r in args.cold_rows.split(",") if r]
        rows = [r for r in rows if with_torch or not r.startswith("torch")]
        cold = measure_cold(_cases(spec), rows, args.cold_repeats, steps_of, args.batch_size)
        print_cold(cold)
        print(f"load average after the cold runs: {_load()}")

    warm = {}
    if not args.no_warm:
        names = (args.workloads or (CPU_WORKLOADS if on_cpu else ",".join(WORKLOADS))).split(",")
        print(
            "\nWARM: fastest call in this process (rows taking turns), median call, least CPU "
            "time of a call, GFLOP/s and % of the large GEMM's (timed in turns with the rows), "
            "speed-up (fastest calls) vs the faster loop and vs torch-lr-finder"
        )
        for name in filter(None, names):
            lanes = args.lanes or (CPU_LANES.get(name, "1,4,16,64") if on_cpu else "1,4,16,64")
            steps = steps_of(name)
            for k in map(int, lanes.split(",")):
                workload, fns, ran = _warm_rows(name, k, steps, args, on_cpu, with_torch)
                if k == int(lanes.split(",")[0]):
                    print(f"{name}: {workload.description}; {steps} steps; load {_load()}")
                flops = workload.flops_per_example * args.batch_size * steps * k
                # The GEMM takes its turns with the rows: one probe's quiet or busy
                # moment would move every row's % alike.
                rows = measure_warm(
                    {**fns, GEMM: gemm_row(args.gemm_size)}, args.repeats, args.min_time
                )
                gemm = 2 * args.gemm_size**3 / rows.pop(GEMM)["steady"]
                warm[(name, k)] = (rows, flops, gemm, ran)
                print_warm(name, k, rows, flops, gemm, ran)
        print(f"\nlarge GEMM at the end: {gemm_rate(args.gemm_size) / 1e9:.1f} GFLOP/s")
    print_targets(cold, warm)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess peak RSS: {peak_rss:.0f} MB; load average at end: {_load()}")


if __name__ == "__main__":
    main()
