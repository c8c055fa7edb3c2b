"""How much cheaper K candidate runs are as lanes of one range test than as K runs.

Every row trains ``K`` lanes for ``--steps`` steps of SGD (momentum 0.9) with an
exponential learning-rate ramp, each lane with its own weight decay, on batches
of ``--batch-size``:

* ``loop/scan``: a Python loop over the K runs, each one call of a jitted
  ``lax.scan`` over all steps (compiled once, weight decay passed as an argument);
* ``loop/step``: a Python loop over the K runs and the steps, calling one jitted
  single-lane train step (what most training scripts do);
* ``torch-lr-finder/<n>t``: ``LRFinder.range_test`` run K times (only when
  ``torch`` and ``torch_lr_finder`` import) with ``torch.set_num_threads(n)``,
  n = 2 and 1 (one thread suffers far less when other processes share the
  cores), same model and optimizer, ``diverge_th=inf`` so every run does all
  steps; "vs torch" compares with the faster of the two;
* ``clrjax/<lanes>``: ``clrjax.range_test`` with each lane strategy, and ``auto``.

Each row's first call runs from empty caches and compiles ("compile" is that
call's time minus the steady time). Then the rows of one workload and K take
turns: ``--repeats`` rounds, each row called in every round until it has run
for ``--min-time / --repeats`` seconds, so that load from other processes hits
all rows alike; the steady time is a row's fastest call. Memory is the
device's peak bytes in use where JAX reports it (GPU/TPU), else the peak growth
of the process's resident set during the steady runs, sampled every 2 ms.

Run from the repository root (the script puts the repository first on
``sys.path``), with the torch environment for the torch rows::

    python benchmarks/bench_range_test.py                # CPU defaults: a few minutes
    python benchmarks/bench_range_test.py --workloads mlp512 --lanes 16
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _workloads import WORKLOADS, Workload, make_batches, make_workload

import clrjax

START_LR, END_LR, MOMENTUM = 1e-4, 1.0, 0.9
LANE_STRATEGIES = ("vmap", "map", "sequential", "serial", "sharded", "auto")


# ----------------------------------------------------------------------------- measuring


class _PeakMemory:
    """Peak memory during a block: device peak bytes, or sampled RSS growth on CPU."""

    def __init__(self):
        self.device = jax.devices()[0]
        self.peak_mb = float("nan")
        self.source = ""

    @staticmethod
    def _rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def __enter__(self):
        stats = self.device.memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            self.source = "device peak"
            return self
        self.source = "RSS growth"
        self._base = self._rss_mb()
        self._top = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.002):
                self._top = max(self._top, self._rss_mb())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.source == "device peak":
            self.peak_mb = self.device.memory_stats()["peak_bytes_in_use"] / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._top, self._rss_mb()) - self._base


def _clear_caches() -> None:
    jax.clear_caches()
    if hasattr(clrjax, "range_test"):
        from clrjax import _driver

        _driver.get_program.cache_clear()
        _driver._CHOICES.clear()


def _measure_rows(rows: dict, repeats: int, min_time: float) -> dict[str, dict[str, float]]:
    """Times every ``rows[name]()`` once cold, then warm, the rows taking turns.

    Cold: each row's first call from empty caches (JAX's and clrjax's), so it
    compiles (and ``auto`` times its candidates). Warm: ``repeats`` rounds; in
    each round every row in turn is called until it has run for
    ``min_time / repeats`` seconds (at least once). Taking turns spreads the
    load of other processes over all rows alike. The fastest warm call is the
    steady time; the median of the warm calls is kept too.
    """
    first = {}
    for name, fn in rows.items():
        _clear_caches()
        start = time.perf_counter()
        jax.block_until_ready(fn())
        first[name] = time.perf_counter() - start
    for fn in rows.values():  # compiled again after the other rows cleared the caches
        jax.block_until_ready(fn())
    times = {name: [] for name in rows}
    peak = dict.fromkeys(rows, 0.0)
    for _ in range(repeats):
        for name, fn in rows.items():
            spent = 0.0
            while spent == 0.0 or spent < min_time / repeats:
                with _PeakMemory() as mem:
                    start = time.perf_counter()
                    jax.block_until_ready(fn())
                    elapsed = time.perf_counter() - start
                times[name].append(elapsed)
                spent += elapsed
                peak[name] = max(peak[name], mem.peak_mb)
    return {
        name: {
            "steady": min(times[name]),
            "median": float(np.median(times[name])),
            "compile": max(first[name] - min(times[name]), 0.0),
            "mem_mb": peak[name],
        }
        for name in rows
    }


# ----------------------------------------------------------------------------- JAX baselines


def _lrs(num_steps: int) -> jax.Array:
    return START_LR * (END_LR / START_LR) ** (jnp.arange(num_steps) / max(num_steps - 1, 1))


def _optimizer(num_steps: int, weight_decay) -> optax.GradientTransformation:
    """SGD with momentum and coupled weight decay (torch.optim.SGD's weight_decay)."""
    lrs = _lrs(num_steps)
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(lambda count: lrs[jnp.minimum(count, num_steps - 1)], momentum=MOMENTUM),
    )


def _single_lane(workload: Workload, num_steps: int):
    """``init(params, wd) -> state`` and ``step(state, wd, batch) -> (state, loss)``."""

    def init(params, weight_decay):
        return params, _optimizer(num_steps, weight_decay).init(params)

    def step(state, weight_decay, batch):
        params, opt_state = state
        loss, grads = jax.value_and_grad(workload.loss_fn)(params, batch)
        updates, opt_state = _optimizer(num_steps, weight_decay).update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return init, step


def single_run(workload: Workload, num_steps: int):
    """``run(params, weight_decay, xs, ys) -> losses``: one lane's whole run (not jitted)."""
    init, step = _single_lane(workload, num_steps)

    def run(params, weight_decay, xs, ys):
        state = init(params, weight_decay)
        _, losses = jax.lax.scan(lambda s, b: step(s, weight_decay, b), state, (xs, ys))
        return losses

    return run


def loop_scan(workload: Workload, batches, weight_decays, num_steps: int):
    """K calls of one jitted whole run (a ``lax.scan`` over the steps)."""
    run = jax.jit(single_run(workload, num_steps))
    xs, ys = map(jnp.asarray, batches)
    return lambda: jnp.stack([run(workload.params, wd, xs, ys) for wd in weight_decays])


def loop_step(workload: Workload, batches, weight_decays, num_steps: int):
    """K x num_steps calls of one jitted single-lane train step from Python."""
    init, step = _single_lane(workload, num_steps)
    init, step = jax.jit(init), jax.jit(step)
    per_step = [(jnp.asarray(x), jnp.asarray(y)) for x, y in zip(*batches, strict=True)]

    def run():
        curves = []
        for wd in weight_decays:
            wd = jnp.asarray(wd, jnp.float32)
            state, losses = init(workload.params, wd), []
            for batch in per_step:
                state, loss = step(state, wd, batch)
                losses.append(loss)
            curves.append(jnp.stack(losses))
        return jnp.stack(curves)

    return run


# ----------------------------------------------------------------------------- torch baseline


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import torch_lr_finder  # noqa: F401
    except ImportError:
        return False
    return True


def torch_lr_finder_runs(
    workload: Workload, weight_decays, num_steps: int, batch_size: int, threads: int
):
    """``LRFinder.range_test`` once per weight decay, on a DataLoader over the same data."""
    import torch
    from torch_lr_finder import LRFinder

    dataset = torch.utils.data.TensorDataset(
        torch.from_numpy(workload.x), torch.from_numpy(workload.y).long()
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True
    )

    def run():
        torch.set_num_threads(threads)  # per call: the rows take turns
        for wd in weight_decays:
            model = workload.torch_model()
            opt = torch.optim.SGD(
                model.parameters(), lr=START_LR, momentum=MOMENTUM, weight_decay=float(wd)
            )
            finder = LRFinder(model, opt, torch.nn.CrossEntropyLoss(), device="cpu")
            with contextlib.redirect_stdout(io.StringIO()):
                finder.range_test(
                    loader,
                    end_lr=END_LR,
                    num_iter=num_steps,
                    step_mode="exp",
                    diverge_th=float("inf"),
                )
            assert len(finder.history["loss"]) == num_steps

    return run


# ----------------------------------------------------------------------------- clrjax


def clrjax_range_test(workload: Workload, weight_decays, num_steps: int, batch_size: int, lanes):
    """One ``clrjax.range_test`` call over a weight-decay grid with strategy ``lanes``.

    ``lanes`` is a lane strategy, optionally with a driver: ``"vmap/python"``;
    ``"map"`` runs a quarter of the lanes at a time.
    """
    if not hasattr(clrjax, "range_test"):
        return None
    data = (jnp.asarray(workload.x), jnp.asarray(workload.y))
    info = {}
    lanes, _, driver = lanes.partition("/")
    options = {"lanes": lanes, "driver": driver or "auto"}
    if lanes == "map":
        options["lane_batch_size"] = max(1, len(weight_decays) // 4)

    def run():
        result = clrjax.range_test(
            workload.loss_fn,
            workload.params,
            data,
            batch_size=batch_size,
            num_steps=num_steps,
            start_lr=START_LR,
            end_lr=END_LR,
            grid={"weight_decay": np.asarray(weight_decays)},
            diverge_threshold=None,
            stop_early=False,
            progress=False,
            **options,
        )
        info["strategy"] = result.strategy
        return result.losses

    return run, info


# ----------------------------------------------------------------------------- probes


def gemm_rate(n: int, repeats: int = 20) -> float:
    """FLOP/s of an ``n x n`` float32 matmul (the machine's large-GEMM rate)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n))
    return 2 * n**3 / fastest_call(jax.jit(jnp.matmul), (a, b), repeats)


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
    parts = [f"python {platform.python_version()}", f"jax {jax.__version__}"]
    import jaxlib

    parts += [f"jaxlib {jaxlib.__version__}", f"optax {optax.__version__}"]
    if torch_available():
        import torch

        parts.append(f"torch {torch.__version__}")
    return ", ".join(parts)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _row(name, k, m, flops, gemm, loop_s, torch_s):
    ratio = lambda base: f"{base / m['steady']:6.2f}x" if base else "     -"
    return (
        f"  {name:<22} K={k:<3d} {m['steady']:8.3f} s  compile {m['compile']:6.2f} s  "
        f"{flops / m['steady'] / 1e9:6.1f} GFLOP/s {flops / m['steady'] / gemm:6.1%}  "
        f"vs loop {ratio(loop_s)}  vs torch {ratio(torch_s)}  mem {m['mem_mb']:6.1f} MB"
    )


# Per-workload K on CPU (on accelerators every workload runs 1,4,16,64), and steps.
CPU_LANES = {"logreg": "1,4,16,64", "mlp64": "1,4,16,64", "mlp512": "1,4,16", "cnn": "1,4,16"}
CPU_STEPS = {"cnn": 20}


def _targets(table, gemm) -> None:
    """Prints the issue's targets against the measured ratios."""
    print("\ntargets (from this run):")

    def check(label, value, ok):
        print(f"  [{'met ' if ok else 'MISS'}] {label}: {value}")

    for (name, k), rows in sorted(table.items()):
        ours = {r: m for r, m in rows.items() if r.startswith("clrjax/")}
        if "clrjax/auto" not in ours:
            continue
        auto = ours["clrjax/auto"]["steady"]
        best_name = min(ours, key=lambda r: ours[r]["steady"])
        best = ours[best_name]["steady"]
        loop = min(m["steady"] for r, m in rows.items() if r.startswith("loop/"))
        check(
            f"{name} K={k} auto <= 1.10 x best ({best_name})",
            f"{auto / best:.2f}x",
            auto <= 1.10 * best,
        )
        check(f"{name} K={k} auto <= loop", f"{auto / loop:.2f}x of loop", auto <= loop)
        if name == "logreg" and k == 16:
            check("logreg K=16 >= 2x faster than loop", f"{loop / auto:.2f}x", loop >= 2 * auto)
        torch_rows = [m["steady"] for r, m in rows.items() if r.startswith("torch")]
        if name in ("logreg", "mlp64", "mlp512") and torch_rows:
            torch_s = min(torch_rows)
            check(
                f"{name} K={k} >= 1.5x faster than torch-lr-finder",
                f"{torch_s / auto:.2f}x",
                torch_s >= 1.5 * auto,
            )
        if name == "mlp512" and k == max(kk for nn, kk in table if nn == "mlp512"):
            rate = rows["clrjax/auto"]["flops"] / auto
            check(
                f"mlp512 K={k} auto >= 70% of large-GEMM rate",
                f"{rate / 1e9:.1f} GFLOP/s = {rate / gemm:.0%}",
                rate >= 0.7 * gemm,
            )
        if name == "cnn" and "loop/step" in rows:
            step = rows["loop/step"]["steady"]
            check(
                f"cnn K={k} auto within 1.2x of K x single-lane jitted steps",
                f"{auto / step:.2f}x",
                auto <= 1.2 * step,
            )
        if name == "mlp64" and k == 4:
            c = rows["clrjax/auto"]["compile"]
            check("demo (digits MLP, 4 lanes, 100 steps) compile < 5 s", f"{c:.2f} s", c < 5)


def main(argv=None):
    on_cpu = jax.default_backend() == "cpu"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    parser.add_argument("--lanes", default=None, help="K values (default: per workload)")
    parser.add_argument("--steps", type=int, default=None, help="default: 100 (CNN on CPU: 20)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="most warm runs per row")
    parser.add_argument("--min-time", type=float, default=1.0, help="warm seconds per row")
    parser.add_argument("--strategies", default=",".join(LANE_STRATEGIES))
    parser.add_argument("--no-torch", action="store_true", help="skip torch-lr-finder rows")
    parser.add_argument("--torch-threads", default="2,1")
    parser.add_argument("--torch-max-lanes", type=int, default=16, help="largest K for torch")
    parser.add_argument("--no-loop-scan", action="store_true")
    parser.add_argument("--gemm-size", type=int, default=2048 if on_cpu else 8192)
    parser.add_argument(
        "--all", action="store_true", help="on CPU too: CIFAR CNN, all K, loop/scan for CNNs"
    )
    args = parser.parse_args(argv)

    gemm = gemm_rate(args.gemm_size)
    print(f"machine: {_cpu_model()}, {os.cpu_count()} CPUs; backend {jax.default_backend()}")
    print(f"devices: {jax.devices()}")
    print(f"versions: {_versions()}")
    print(f"load average at start: {os.getloadavg()}")
    print(f"large GEMM ({args.gemm_size}^2 float32): {gemm / 1e9:.1f} GFLOP/s")
    print(
        f"task: batch {args.batch_size}, SGD momentum {MOMENTUM}, exp LR ramp "
        f"{START_LR:g} -> {END_LR:g}, K weight-decay lanes in geomspace(1e-5, 1e-2, K)"
    )
    print(
        "columns: steady s (fastest warm run), compile (first run minus steady), GFLOP/s and % of "
        "large GEMM, speed-up vs the faster loop and vs torch-lr-finder, peak memory"
    )
    with_torch = not args.no_torch and torch_available()
    if not with_torch:
        print("torch-lr-finder rows: skipped (torch/torch_lr_finder not importable or --no-torch)")
    if not hasattr(clrjax, "range_test"):
        print("clrjax rows: skipped (clrjax.range_test not available in this checkout)")
    strategies = [s for s in args.strategies.split(",") if s]
    if "sharded" in strategies and jax.device_count() == 1:
        strategies.remove("sharded")
        print("clrjax/sharded rows: skipped (one device; tested on 8 forced CPU devices)")

    table = {}
    for name in args.workloads.split(","):
        convolutional = name in ("cnn", "cifar_cnn")
        cpu_default = on_cpu and not args.all
        if name == "cifar_cnn" and cpu_default:
            print(f"\n{name}: skipped on CPU (GPU rows only; --all runs it)")
            continue
        workload = make_workload(name)
        gemm = max(gemm, gemm_rate(args.gemm_size))  # one probe can catch a load spike
        lanes_arg = args.lanes or (CPU_LANES.get(name, "1,4,16,64") if cpu_default else None)
        lanes = [int(k) for k in (lanes_arg or "1,4,16,64").split(",")]
        steps = args.steps or (CPU_STEPS.get(name, 100) if cpu_default else 100)
        batches = make_batches(workload, steps, args.batch_size)
        print(f"\n{workload.name}: {workload.description}; {steps} steps, K in {lanes}")
        if convolutional and cpu_default:
            print("  (CPU default: 20 steps, loop/scan skipped, see jax-ml/jax#12868; --all: all)")
        rows_strategies = list(strategies)
        if convolutional:
            rows_strategies.insert(1, "vmap/unrolled")
        if convolutional and cpu_default and "serial" in rows_strategies:
            rows_strategies.remove("serial")  # a lanes loop around convolutions: as slow as map
            print("  (CPU default: no clrjax/serial row, a loop around convolutions like map)")
        for k in lanes:
            wds = np.geomspace(1e-5, 1e-2, k) if k > 1 else np.array([1e-4])
            flops = workload.flops_per_example * args.batch_size * steps * k
            fns, ran = {}, {}
            if not (args.no_loop_scan or (convolutional and cpu_default)):
                fns["loop/scan"] = loop_scan(workload, batches, wds, steps)
            fns["loop/step"] = loop_step(workload, batches, wds, steps)
            if with_torch and k <= args.torch_max_lanes:
                for threads in map(int, args.torch_threads.split(",")):
                    fns[f"torch-lr-finder/{threads}t"] = torch_lr_finder_runs(
                        workload, wds, steps, args.batch_size, threads
                    )
            for lane_strategy in rows_strategies:
                made = clrjax_range_test(workload, wds, steps, args.batch_size, lane_strategy)
                if made is not None:
                    fns[f"clrjax/{lane_strategy}"], ran[f"clrjax/{lane_strategy}"] = made
            rows = table[(name, k)] = _measure_rows(fns, args.repeats, args.min_time)
            loop_s = min(m["steady"] for r, m in rows.items() if r.startswith("loop/"))
            torch_rows = [m["steady"] for r, m in rows.items() if r.startswith("torch")]
            torch_s = min(torch_rows, default=None)
            for row, m in rows.items():
                m["flops"] = flops
                label = f"  ran {ran[row].get('strategy')}" if row in ran else ""
                print(_row(row, k, m, flops, gemm, loop_s, torch_s) + label)
            sys.stdout.flush()
    gemm_end = gemm_rate(args.gemm_size)
    print(f"\nlarge GEMM again at the end: {gemm_end / 1e9:.1f} GFLOP/s (targets use the faster)")
    _targets(table, max(gemm, gemm_end))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess peak RSS: {peak_rss:.0f} MB; load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
