"""The JAX rows of the benchmarks: loops of K single runs, and clrjax's range test.

Every row trains K lanes for ``num_steps`` steps of SGD (momentum 0.9, coupled
weight decay: ``torch.optim.SGD`` semantics) with an exponential learning-rate
ramp ``START_LR`` -> ``END_LR`` (``_data.py``), lane ``i`` with weight decay
``wds[i]``. A row is a function of no arguments returning the losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _data import END_LR, MOMENTUM, START_LR
from _workloads import Workload


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


def loop_scan(workload: Workload, batches, wds, num_steps: int):
    """``loop/scan``: K calls of one jitted whole run (a ``lax.scan`` over the steps)."""
    run = jax.jit(single_run(workload, num_steps))
    xs, ys = map(jnp.asarray, batches)
    return lambda: jnp.stack([run(workload.params, wd, xs, ys) for wd in wds])


def loop_step(workload: Workload, batches, wds, num_steps: int):
    """``loop/step``: K x num_steps calls of one jitted single-lane train step from Python."""
    init, step = _single_lane(workload, num_steps)
    init, step = jax.jit(init), jax.jit(step)
    per_step = [(jnp.asarray(x), jnp.asarray(y)) for x, y in zip(*batches, strict=True)]

    def run():
        curves = []
        for wd in wds:
            wd = jnp.asarray(wd, jnp.float32)
            state, losses = init(workload.params, wd), []
            for batch in per_step:
                state, loss = step(state, wd, batch)
                losses.append(loss)
            curves.append(jnp.stack(losses))
        return jnp.stack(curves)

    return run


def clrjax_range_test(workload: Workload, wds, num_steps: int, batch_size: int, row: str):
    """``clrjax/<row>``: one ``clrjax.range_test`` over the weight-decay grid.

    ``row`` is a strategy (``"auto"``, ``"timed"``, ``"vmap"``, ``"serial"``,
    ``"map"``), optionally with a driver: ``"vmap/chunks"``; ``"map"`` steps a
    quarter of the lanes at a time. Returns ``(run, info)``: ``info["strategy"]``
    is ``result.strategy`` of the last call.
    """
    import clrjax  # here, not above: a cold loop row must not pay for importing clrjax

    data = (jnp.asarray(workload.x), jnp.asarray(workload.y))
    strategy, _, driver = row.partition("/")
    execution = clrjax.Execution(
        strategy=strategy,
        driver=driver or "auto",
        lane_group_size=max(1, len(wds) // 4) if strategy == "map" else None,
        progress=False,
    )
    info = {}

    def run():
        result = clrjax.range_test(
            workload.loss_fn,
            workload.params,
            data,
            batch_size=batch_size,
            num_steps=num_steps,
            start_lr=START_LR,
            end_lr=END_LR,
            grid={"weight_decay": np.asarray(wds)},
            curve=clrjax.Curve(diverge_threshold=None),
            execution=execution,
        )
        info["strategy"] = result.strategy
        return result.losses

    return run, info
