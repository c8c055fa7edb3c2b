"""Training candidates as lanes: each lane its own schedules, seed and scores.

The race of :func:`clrjax.find_schedule` and the demo's training comparison
train many candidate runs at once on the lane engine: a lane's learning rate
(and momentum, or any hyperparameter) follows its own schedule, given as one
value per step; its seed fixes its initial parameters and data order (lanes of
one seed share them, so candidates are compared pairwise; a stream of batches
has one order, every lane's); it is scored on
validation data at chosen steps. Only a NaN/Inf loss ends a lane early.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from clrjax import _engine
from clrjax._engine import host_memory_budget, plan_batches


class Trained(NamedTuple):
    """What :func:`train_lanes` measured (NumPy arrays).

    Attributes:
      losses: ``(lanes, num_steps)`` training loss of every step (NaN after a
        lane's loss turned NaN/Inf).
      scores: ``name -> (lanes, num_evals)`` validation scores (``"loss"``, and
        ``"metric"`` when the task has one) after each step in ``eval_steps``.
      eval_steps: ``(num_evals,)`` the steps scored.
      diverged_at: ``(lanes,)`` the step whose loss was NaN/Inf, or -1.
      strategy: how the lanes ran, e.g. ``"vmap/chunks"``.
    """

    losses: np.ndarray
    scores: dict[str, np.ndarray]
    eval_steps: np.ndarray
    diverged_at: np.ndarray
    strategy: str


def rung_host_bytes(
    num_steps: int, num_lanes: int, num_orders: int, batch_size: int, chunk_bytes: int = 0
) -> int:
    """Host bytes of a race rung's arrays: its per-step arrays, and a stream's chunk.

    Per step: the batch indices of every data order (int64 permutations and
    their int32 copy), each lane's learning rate and momentum (float32: computed
    on the device, copied to the host, and the engine's copy, each), each lane's
    loss, smoothed loss and divergence flag (on the device and their host
    copies), and the step's flags. A stream of batches has no data orders
    (``num_orders`` 0); it holds ``chunk_bytes``, the batches of one chunk,
    twice (as read, and stacked), whatever the number of steps.

    Examples:
      >>> print(rung_host_bytes(1000, num_lanes=4, num_orders=2, batch_size=32))
      952000
      >>> print(rung_host_bytes(1000, num_lanes=4, num_orders=0, batch_size=32, chunk_bytes=10**6))
      2184000
    """
    per_step = 16 + 12 * num_orders * batch_size + num_lanes * (2 * 12 + 2 * 9)
    return num_steps * per_step + 2 * chunk_bytes


def check_rung_memory(
    total_steps: int,
    num_steps: int,
    num_lanes: int,
    num_orders: int,
    batch_size: int,
    chunk_bytes: int = 0,
) -> None:
    """Raises ``MemoryError`` naming ``total_steps`` when a rung would not fit in half the RAM.

    Called before anything of the rung is allocated (:func:`rung_host_bytes`
    counts what would be), like the range test's own check. With a stream
    (``chunk_bytes`` > 0) the error names ``Execution.chunk_size`` as well.
    """
    need, budget = (
        rung_host_bytes(num_steps, num_lanes, num_orders, batch_size, chunk_bytes),
        host_memory_budget(),
    )
    if need > budget:
        held, lower = "batch indices", "batch_size"
        if chunk_bytes:
            held = f"a chunk of the stream's batches ({chunk_bytes / 2**30:.1f} GiB)"
            lower = "Execution.chunk_size (the steps, hence batches, of a chunk)"
        raise MemoryError(
            f"total_steps={total_steps}: a race rung of {num_lanes} lanes x {num_steps} steps "
            f"of {batch_size} examples needs about {need / 2**30:.1f} GiB of host memory for its "
            f"per-step arrays ({held}, schedules, each lane's losses), more than half the "
            f"available RAM ({budget / 2**30:.1f} GiB); lower total_steps or {lower}"
        )


def train_lanes(
    task: Any,
    start: Any,
    data: Any,
    *,
    num_steps: int,
    batch_size: int,
    schedules: Mapping[str, np.ndarray],
    constants: Mapping[str, np.ndarray],
    seeds: np.ndarray,
    key: jax.Array,
    val: Any,
    eval_steps: np.ndarray,
    request: _engine.Request,
) -> Trained:
    """Trains one lane per column of ``schedules`` / entry of ``seeds``.

    Args:
      task: a :class:`~clrjax._loss_task.LossTask` (its ``init_fn`` draws each
        seed's parameters) or another engine task.
      start: the task's start (e.g. ``(params, model_state)``).
      data: the training data: a pytree of arrays (shuffled per seed and
        epoch), or a re-iterable stream of batches, read from its start and
        in its own order (every lane steps on the same batch; seeds then
        differ by their ``init_fn`` parameters and PRNG keys only).
      num_steps: steps per lane.
      batch_size: examples per step (arrays; a stream's batches are its own).
      schedules: ``name -> (num_steps, lanes)`` per-step hyperparameters (at
        least ``"learning_rate"``).
      constants: ``name -> (lanes,)`` hyperparameters fixed per lane.
      seeds: ``(lanes,)`` integer seeds.
      key: the base PRNG key.
      val: validation batches stacked on a leading axis.
      eval_steps: ``(num_evals,)`` sorted steps after which every lane is scored.
      request: how to run the lanes.

    Returns:
      The :class:`Trained` record.
    """
    seeds = np.asarray(seeds)
    source, orders = plan_batches(
        data,
        batch_size=batch_size,
        num_steps=num_steps,
        accumulation_steps=1,
        shuffle=True,
        key=key,
        seeds=seeds,
    )
    evaluate = np.zeros(num_steps, bool)
    evaluate[np.asarray(eval_steps)] = True
    plan = _engine.StepPlan(
        num_steps=num_steps,
        hparams={},
        lane_hparams=dict(schedules),
        evaluate=evaluate,
        source=source,
    )
    out = _engine.run(
        task,
        start,
        lanes=_engine.LaneSpec(len(seeds), dict(constants), seeds, orders),
        plan=plan,
        key=key,
        val=val,
        smoothing="ema",
        tracking=_engine.Tracking(
            beta=0.0, threshold=math.inf, rebound=math.inf, rebound_drop=0.0, start_steps=1
        ),
        request=request,
    )
    return Trained(
        losses=out.losses,
        scores=dict(out.evaluations),
        eval_steps=np.flatnonzero(evaluate),
        diverged_at=out.diverged_at,
        strategy=out.strategy,
    )
