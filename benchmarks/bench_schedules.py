"""Cost of a clrjax schedule over a constant learning rate in a jitted SGD train step.

For each schedule (and each model), the same jitted program trains an MLP on
digits for ``--steps`` steps of ``optax.sgd(learning_rate, momentum=0.9)``
inside one ``lax.scan``; only the learning rate differs: a Python float, or a
clrjax schedule evaluated at the step count. Constant and scheduled programs
are timed alternately ``--repeats`` times; the overhead is the ratio of the
fastest runs minus one (target: at most 2%). Also reported: the optimizer
update alone (no model), where the schedule's share is largest.

Run from the repository root::

    python benchmarks/bench_schedules.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
import jax.numpy as jnp
import optax
from _data import make_batches
from _workloads import make_workload

import clrjax


def _schedules(total: int) -> dict[str, optax.Schedule]:
    """The clrjax schedules this checkout has, built with typical arguments."""
    makers = {
        "triangular_schedule": lambda f: f(1e-3, 0.1, step_size_up=total // 4),
        "triangular2_schedule": lambda f: f(1e-3, 0.1, step_size_up=total // 4),
        "exp_range_schedule": lambda f: f(1e-3, 0.1, step_size_up=total // 4, gamma=0.999),
        "one_cycle_schedule": lambda f: f(total, 0.1),
        "cosine_warm_restarts_schedule": lambda f: f(0.1, total // 8, t_mult=2),
    }
    return {n: make(getattr(clrjax, n)) for n, make in makers.items() if hasattr(clrjax, n)}


def _momentum_schedules(total: int) -> dict[str, tuple[optax.Schedule, optax.Schedule]]:
    """``(lr, momentum)`` schedule pairs, applied with ``clrjax.scheduled``."""
    pairs = {}
    if all(hasattr(clrjax, n) for n in ("scheduled", "one_cycle_momentum_schedule")):
        pairs["one_cycle + momentum"] = (
            clrjax.one_cycle_schedule(total, 0.1),
            clrjax.one_cycle_momentum_schedule(total),
        )
    if all(hasattr(clrjax, n) for n in ("scheduled", "cyclic_momentum_schedule")):
        pairs["triangular + cyclic momentum"] = (
            clrjax.triangular_schedule(1e-3, 0.1, step_size_up=total // 4),
            clrjax.cyclic_momentum_schedule(0.85, 0.95, step_size_up=total // 4),
        )
    return pairs


def _program(loss_fn, tx: optax.GradientTransformation):
    """Jitted ``(params, xs, ys) -> losses``: a scan of train steps."""

    @jax.jit
    def train(params, xs, ys):
        def step(carry, batch):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, batch)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        return jax.lax.scan(step, (params, tx.init(params)), (xs, ys))[1]

    return train


def _time(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def _compare(programs: dict[str, object], args, repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` interleaved runs of each program (after one warm-up)."""
    for fn in programs.values():
        jax.block_until_ready(fn(*args))
    best = dict.fromkeys(programs, float("inf"))
    for _ in range(repeats):
        for name, fn in programs.items():
            best[name] = min(best[name], _time(fn, *args))
    return best


def _report(title: str, best: dict[str, float], steps: int) -> None:
    base = best["constant"]
    print(f"\n{title}")
    print(f"  {'learning rate':<32} {'us/step':>9} {'overhead':>9}")
    for name, t in best.items():
        overhead = "-" if name == "constant" else f"{t / base - 1:+.1%}"
        print(f"  {name:<32} {t / steps * 1e6:9.1f} {overhead:>9}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp64,mlp512")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    print(f"backend {jax.default_backend()}, jax {jax.__version__}, optax {optax.__version__}")

    schedules = _schedules(args.steps)
    pairs = _momentum_schedules(args.steps)
    if not schedules:
        print("no clrjax schedules in this checkout")
        return

    def optimizers():
        yield "constant", optax.sgd(0.05, momentum=0.9)
        for name, schedule in schedules.items():
            yield name, optax.sgd(schedule, momentum=0.9)
        for name, (lr, momentum) in pairs.items():
            yield name, clrjax.scheduled(optax.sgd, learning_rate=lr, momentum=momentum)

    for model in args.models.split(","):
        workload = make_workload(model)
        xs, ys = map(jnp.asarray, make_batches(workload, args.steps, 128))
        programs = {n: _program(workload.loss_fn, tx) for n, tx in optimizers()}
        best = _compare(programs, (workload.params, xs, ys), args.repeats)
        _report(f"{workload.description}: {args.steps} steps, batch 128", best, args.steps)

    # The update alone: 1M parameters, no model, so the schedule's share is largest.
    params = {"w": jnp.zeros((1024, 1024))}
    grads = {"w": jnp.full((1024, 1024), 1e-3)}

    def update_only(tx):
        @jax.jit
        def run(params, grads):
            def step(carry, _):
                params, state = carry
                updates, state = tx.update(grads, state, params)
                return (optax.apply_updates(params, updates), state), None

            init = (params, tx.init(params))
            return jax.lax.scan(step, init, length=args.steps)[0][0]

        return run

    programs = {n: update_only(tx) for n, tx in optimizers()}
    best = _compare(programs, (params, grads), args.repeats)
    _report(f"optimizer update only, 1M params: {args.steps} steps", best, args.steps)


if __name__ == "__main__":
    main()
