"""One row's first call in a fresh process: imports, data, one call (run by ``bench_range_test``).

    python benchmarks/_cold.py ROW WORKLOAD K STEPS BATCH_SIZE

``ROW`` is ``clrjax/<strategy>``, ``loop/scan`` or ``torch-lr-finder/<n>t``.
Each row imports only what its user would (the torch row never imports JAX,
the loop row never imports clrjax). Prints one JSON line: the seconds of the
imports, of building the data and the row, and of the call (compilation
included), and clrjax's ``result.strategy``.
"""

import time

_BEGIN = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")


def main(row: str, name: str, num_lanes: int, num_steps: int, batch_size: int) -> dict:
    kind, _, variant = row.partition("/")
    if kind == "torch-lr-finder":
        import torch  # noqa: F401
        import torch_lr_finder  # noqa: F401
        from _data import load, weight_decays
        from _torch_rows import torch_lr_finder_runs

        imported = time.perf_counter()
        threads = int(variant.rstrip("t"))
        wds = weight_decays(num_lanes)
        fn = torch_lr_finder_runs(load(name), wds, num_steps, batch_size, threads)
        info, block = {}, lambda out: out
    else:
        import jax
        import optax  # noqa: F401

        if kind == "clrjax":
            import clrjax  # noqa: F401
        from _data import make_batches, weight_decays
        from _rows import clrjax_range_test, loop_scan
        from _workloads import make_workload

        imported = time.perf_counter()
        workload = make_workload(name)
        wds = weight_decays(num_lanes)
        if kind == "clrjax":
            fn, info = clrjax_range_test(workload, wds, num_steps, batch_size, variant)
        elif row == "loop/scan":
            batches = make_batches(workload, num_steps, batch_size)
            fn, info = loop_scan(workload, batches, wds, num_steps), {}
        else:
            raise ValueError(f"no cold row {row!r}")
        block = jax.block_until_ready
    built = time.perf_counter()
    block(fn())
    called = time.perf_counter()
    return {
        "imports": imported - _BEGIN,
        "data": built - imported,
        "call": called - built,
        "strategy": info.get("strategy", ""),
    }


if __name__ == "__main__":
    row, name, lanes, steps, batch = sys.argv[1:]
    print(json.dumps(main(row, name, int(lanes), int(steps), int(batch))))
