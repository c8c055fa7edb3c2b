"""What ``clrjax.find_schedule`` costs, next to training 5 seeds of one schedule for the budget.

The task is the issue's mnist1d task: an MLP 40-256-256-10 (ReLU, He init),
SGD with Nesterov momentum 0.9, batch 128, 60 epochs of the 4,000-example
training split (1,860 steps). Rows, each run in a **fresh Python process**
(imports and XLA compiles included, nothing cached between rows):

* ``find_schedule``: ``clrjax.find_schedule`` as ``clrjax train-demo`` and
  ``examples/seed_claim.py`` run it (``clrjax.demo.find_demo_schedule``): on
  the first 80% of the training split,
  ``val_data`` the last 20%, ``val_metric`` accuracy, ``total_steps`` 1,860
  (range test, then the race);
* ``engine``: 5 seeds of one schedule (one-cycle, peak 0.4) for the full
  budget on the whole training split as lanes of one program on the lane
  engine (``clrjax._training.train_lanes`` through
  ``clrjax.demo.train_arms``), test accuracy after every epoch;
* ``scan``: the same 5 runs as one ``jax.jit(jax.vmap(...))`` of a
  ``lax.scan`` over the epochs and steps (``optax.sgd`` with the one-cycle
  learning rate and momentum per step, test accuracy after every epoch), no
  clrjax engine.

Each child reports its wall and CPU time (user + system, all threads;
``time.process_time``) from before its ``import jax`` to its end, without the
data generation (reported apart: mnist1d is generated in every process). The
ratios divide ``find_schedule``'s time by each reference's. With
``--repeats`` the rows take turns (the order reversed every round) and each
row keeps its fastest round, so other processes' load hits all rows alike.

Run from the repository root::

    python benchmarks/bench_find_schedule.py              # ~5-15 min on 2 CPU cores
    python benchmarks/bench_find_schedule.py --repeats 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _bytecode import compile_sources  # noqa: E402

ROWS = ("find_schedule", "engine", "scan")
SEEDS = 5
PEAK = 0.4  # the reference schedule's peak (any peak costs the same)


def _child(row: str, epochs: int, range_test_steps: int) -> dict[str, float]:
    """Runs one row in this process; returns its times."""
    begin, cpu_begin = time.perf_counter(), time.process_time()
    from clrjax.demo import _comparison as cmp  # imports clrjax, jax, optax, numpy: counted

    imported, cpu_imported = time.perf_counter(), time.process_time()
    data, init_fn, _ = cmp.demo_problem("mnist1d", (256, 256))
    data_seconds = time.perf_counter() - imported
    data_cpu = time.process_time() - cpu_imported
    batch_size = 128
    seeds = list(range(cmp.FIRST_SEED, cmp.FIRST_SEED + SEEDS))
    if row == "find_schedule":
        choice = cmp.find_demo_schedule(
            data,
            init_fn,
            epochs=epochs,
            batch_size=batch_size,
            range_test_steps=range_test_steps,
        )
        extra = {"winner": f"{choice.kind} {choice.learning_rate:.3g}"}
    elif row == "engine":
        out = cmp.train_arms(
            [cmp.Arm("one-cycle", "one_cycle", PEAK, "reference")],
            seeds,
            data,
            init_fn,
            epochs=epochs,
            batch_size=batch_size,
        )
        extra = {"final accuracy": float(out.test_acc[0, :, -1].mean())}
    else:
        final = _scan_reference(data, init_fn, seeds, epochs)
        extra = {"final accuracy": float(final.mean())}
    seconds = time.perf_counter() - begin - data_seconds
    cpu = time.process_time() - cpu_begin - data_cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "data_seconds": data_seconds, **extra}


def _scan_reference(data, init_fn, seeds, epochs):
    """5 one-cycle runs as one jitted, vmapped scan; final test accuracy per seed."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import clrjax
    from clrjax.demo import _data

    batch_size = 128
    per_epoch = len(data.x_train) // batch_size
    total = epochs * per_epoch
    steps = jnp.arange(total)
    lrs = clrjax.one_cycle_schedule(total, PEAK)(steps).reshape(epochs, per_epoch)
    moms = clrjax.one_cycle_momentum_schedule(total)(steps).reshape(epochs, per_epoch)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    test = (jnp.asarray(data.x_test), jnp.asarray(data.y_test))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=PEAK, momentum=0.9, nesterov=True)

    def one_seed(seed):
        init_key, data_key = jax.random.split(jax.random.key(seed))
        params = init_fn(init_key)

        def step(carry, inputs):
            params, state = carry
            idx, lr, mom = inputs
            state.hyperparams["learning_rate"] = lr
            state.hyperparams["momentum"] = mom
            loss, grads = jax.value_and_grad(_data.mlp_loss)(params, (x[idx], y[idx]))
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        def epoch(carry, inputs):
            e, lr, mom = inputs
            order = jax.random.permutation(jax.random.fold_in(data_key, e), len(x))
            batches = order[: per_epoch * batch_size].reshape(per_epoch, batch_size)
            carry, _ = jax.lax.scan(step, carry, (batches, lr, mom))
            return carry, _data.mlp_accuracy(carry[0], test)

        _, acc = jax.lax.scan(epoch, (params, tx.init(params)), (jnp.arange(epochs), lrs, moms))
        return acc

    acc = jax.jit(jax.vmap(one_seed))(jnp.asarray(seeds, jnp.uint32))
    return np.asarray(acc)[:, -1]


def _run_row(row: str, epochs: int, range_test_steps: int) -> dict[str, float]:
    """Runs ``row`` in a fresh process; adds the process's wall and CPU time seen from here."""
    before = os.times()
    begin = time.perf_counter()
    proc = subprocess.run(
        [
            *(sys.executable, __file__, "--child", row),
            *("--epochs", str(epochs), "--range-test-steps", str(range_test_steps)),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    wall = time.perf_counter() - begin
    after = os.times()
    if proc.returncode:
        raise RuntimeError(f"row {row!r} failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return {**out, "process_seconds": wall, "process_cpu_seconds": cpu}


def measure(
    rows: tuple[str, ...] = ROWS, repeats: int = 1, epochs: int = 60, range_test_steps: int = 100
) -> dict:
    """Every row ``repeats`` times in fresh processes, taking turns; the fastest round per row."""
    compile_sources()  # as an installed clrjax has its bytecode
    runs: dict[str, list[dict[str, float]]] = {row: [] for row in rows}
    order = list(rows)
    for _ in range(repeats):
        for row in order:
            runs[row].append(_run_row(row, epochs, range_test_steps))
            print(f"  {row}: {runs[row][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
        order.reverse()
    best = {row: min(r, key=lambda m: m["seconds"]) for row, r in runs.items()}
    ratios = {}
    if "find_schedule" in best:
        found = best["find_schedule"]
        for ref in (r for r in rows if r != "find_schedule"):
            ratios[ref] = {
                "wall": found["seconds"] / best[ref]["seconds"],
                "cpu": found["cpu_seconds"] / best[ref]["cpu_seconds"],
            }
    return {
        "task": f"mnist1d MLP 40-256-256-10, SGD + Nesterov 0.9, batch 128, {epochs} epochs",
        "repeats": repeats,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg()[0],
        "best": best,
        "all": runs,
        "ratios": ratios,
    }


def report(result: dict) -> str:
    """The measurement as a plain-text table."""
    lines = [
        f"{result['task']}; fresh processes, best of {result['repeats']}; "
        f"{result['machine']}, load average {result['load_average']:.1f} at the end",
        f"{'row':<14} {'wall (s)':>9} {'CPU (s)':>9} {'data (s)':>9} {'process (s)':>12}",
    ]
    for row, m in result["best"].items():
        lines.append(
            f"{row:<14} {m['seconds']:>9.1f} {m['cpu_seconds']:>9.1f} {m['data_seconds']:>9.1f} "
            f"{m['process_seconds']:>12.1f}"
        )
    for ref, r in result["ratios"].items():
        lines.append(f"find_schedule / {ref}: {r['wall']:.2f}x wall, {r['cpu']:.2f}x CPU")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all rows (default 1)")
    parser.add_argument("--epochs", type=int, default=60, help="the budget (default 60)")
    parser.add_argument("--range-test-steps", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print the result as JSON last")
    parser.add_argument("--child", choices=ROWS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.epochs, args.range_test_steps)))
        return 0
    result = measure(tuple(args.rows), args.repeats, args.epochs, args.range_test_steps)
    print(report(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
