"""Step drivers: how a program's chunks are called until every step has run.

``"scan"`` is one call of the whole run; ``"chunks"`` calls ``chunk_size``
steps at a time, returning to Python between chunks (a progress bar, an early
stop once every lane diverged, Ctrl-C); ``"python"`` is a chunk of one step
per call. Each chunk is run by every :class:`Group` of lanes (one group,
except ``"serial"`` placement: one call per lane group), in turn or on several
host threads at once (XLA:CPU runs each call on the thread that makes it). An
interrupt between calls ends the run with the chunks that completed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import numpy as np

from clrjax._engine.feeding import StepPlan
from clrjax._engine.program import Program


class Group(NamedTuple):
    """Lanes that one call of the program runs together.

    Attributes:
      carry: their :class:`~clrjax._engine.lane_step.LaneState` (lane axis first).
      consts: their :class:`~clrjax._engine.lane_step.LaneConsts`.
      lanes: their slice of the run's lanes (per-lane step inputs are cut with it).
    """

    carry: Any
    consts: Any
    lanes: slice


class Driven(NamedTuple):
    """What :func:`drive` returns.

    Attributes:
      outputs: the :class:`~clrjax._engine.lane_step.Outputs` of every step run,
        as NumPy arrays ``(steps_run, lanes)``.
      steps_run: steps actually run (fewer after an early stop or an interrupt).
      interrupted: a ``KeyboardInterrupt`` ended the run early.
    """

    outputs: Any
    steps_run: int
    interrupted: bool


def drive(
    program: Program,
    groups: list[Group],
    shared: Any,
    plan: StepPlan,
    *,
    chunk_size: int,
    stop_early: bool,
    progress: Any = None,
    threads: int = 1,
) -> Driven:
    """Runs ``plan.num_steps`` steps, ``chunk_size`` per call of ``program.run`` and group.

    Outputs are copied to the host as each chunk completes, so an interrupt
    keeps every completed chunk. ``progress`` is ``None`` or a tqdm-like object.
    ``groups`` is updated in place with each group's carry. With ``threads`` > 1
    the groups of a chunk step on that many host threads at once.
    """
    num_steps = plan.num_steps
    pieces: list[Any] = []
    start, interrupted, alive = 0, False, True
    pool = ThreadPoolExecutor(threads) if threads > 1 and len(groups) > 1 else None
    try:
        while start < num_steps:
            xs, lane_xs = plan.chunk(start, chunk_size)

            def run_group(i: int, xs=xs, lane_xs=lane_xs) -> Any:
                group = groups[i]
                own = jax.tree.map(lambda a: a[:, group.lanes], lane_xs)
                carry, out = program.run(group.carry, group.consts, shared, xs, own)
                groups[i] = group._replace(carry=carry)
                return out if pool is None else jax.block_until_ready(out)

            # Without threads every group is dispatched before any output is read.
            each = map if pool is None else pool.map
            outputs = list(each(run_group, range(len(groups))))
            pieces.append(jax.tree.map(lambda *o: np.concatenate(o, axis=1), *outputs))
            done = min(chunk_size, num_steps - start)
            start += chunk_size
            if progress is not None:
                progress.update(done)
            alive = alive & ~pieces[-1].flagged.any(axis=0)
            if stop_early and start < num_steps and not alive.any():
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if pool is not None:  # a call under way cannot be stopped; the queued ones are dropped
            pool.shutdown(wait=True, cancel_futures=True)
    steps_run = min(start, num_steps) if not interrupted else sum(_length(p) for p in pieces)
    steps_run = min(steps_run, num_steps)
    if not pieces:
        return Driven(None, 0, interrupted)
    joined = jax.tree.map(lambda *p: np.concatenate(p)[:steps_run], *pieces)
    return Driven(joined, steps_run, interrupted)


def _length(outputs: Any) -> int:
    return len(jax.tree.leaves(outputs)[0])
