r"""One lane's step: the task's training step, then loss smoothing and divergence tracking.

Per lane and step ``t`` with raw loss :math:`\ell_t`:

* **smoothing** (``"debiased_ema"``, fastai's ``AvgSmoothLoss``):
  :math:`v_t = \beta v_{t-1} + (1 - \beta)\ell_t` from :math:`v_{-1} = 0`,
  :math:`s_t = v_t / (1 - \beta^{t+1})`; (``"ema"``, torch-lr-finder):
  :math:`s_0 = \ell_0`, :math:`s_t = \beta s_{t-1} + (1 - \beta)\ell_t`;
* **divergence**: with :math:`b_t = \min_{u \le t} s_u`, the lane diverges at
  the first step where :math:`\ell_t` or :math:`s_t` is NaN/Inf, or
  :math:`s_t - b_t > (\tau - 1)|b_t|` (for positive losses exactly fastai's and
  torch-lr-finder's :math:`s_t > \tau b_t`), or the loss *rebounds*: with
  :math:`\bar\ell` the mean raw loss of the first :math:`k` steps and
  :math:`d_t = \bar\ell - b_t`, at a step :math:`t \ge k` where
  :math:`d_t > \delta |\bar\ell|` (it fell by a fraction :math:`\delta` of its
  start) and :math:`s_t - b_t > \rho\, d_t` (it climbed back a fraction
  :math:`\rho` of that fall): a classifier collapsing back towards chance,
  which the :math:`\tau` rule misses.

A diverged lane's outputs are NaN from the step after the one that flagged it
(that step's loss is recorded, as the reference tools record it); lanes never
mix, so its NaN/Inf values cannot reach another lane.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from clrjax._engine.task import Task

SMOOTHINGS = ("debiased_ema", "ema")


class Tracker(NamedTuple):
    """A lane's smoothed loss and divergence bookkeeping.

    Attributes:
      ema: the smoothing state (:math:`v_t`, or :math:`s_t` for ``"ema"``).
      start: the mean raw loss of the first ``start_steps`` steps.
      best: the lowest smoothed loss so far :math:`b_t`.
      alive: the lane has not diverged.
      diverged_at: the step that flagged the lane, or -1.
    """

    ema: jax.Array
    start: jax.Array
    best: jax.Array
    alive: jax.Array
    diverged_at: jax.Array

    @classmethod
    def initial(cls) -> Tracker:
        return cls(
            ema=jnp.zeros((), jnp.float32),
            start=jnp.zeros((), jnp.float32),
            best=jnp.full((), jnp.inf, jnp.float32),
            alive=jnp.ones((), bool),
            diverged_at=jnp.full((), -1, jnp.int32),
        )


class LaneState(NamedTuple):
    """What one lane carries from step to step.

    Attributes:
      train: the task's train state (params, optimizer state, model state, ...).
      tracker: the :class:`Tracker`.
    """

    train: Any
    tracker: Tracker


class Outputs(NamedTuple):
    """What one lane reports per step (NaN once the lane diverged).

    Attributes:
      loss: the raw training loss.
      smoothed: the smoothed loss.
      flagged: True on the step that flagged the lane as diverged.
      evaluation: the task's validation scores after this step's update (a
        pytree of scalars; NaN on steps without validation), or ``None``.
    """

    loss: jax.Array
    smoothed: jax.Array
    flagged: jax.Array
    evaluation: Any


class Tracking(NamedTuple):
    r"""The divergence rule's numbers (traced: new values never recompile).

    Attributes:
      beta: the smoothing coefficient :math:`\beta` in ``[0, 1)``.
      threshold: :math:`\tau` (``inf``: off).
      rebound: :math:`\rho`, the fraction of the fall a rebound climbs back
        (``inf``: off).
      rebound_drop: :math:`\delta`, the relative fall from the start level that
        arms the rebound rule.
      start_steps: :math:`k`, the steps whose mean raw loss is the start level.
    """

    beta: Any
    threshold: Any
    rebound: Any
    rebound_drop: Any
    start_steps: Any


class LaneConsts(NamedTuple):
    """One lane's constants (leaves carry the lane axis outside the lane step).

    Attributes:
      hparams: ``name -> scalar`` hyperparameters fixed for the whole run.
      key: the lane's PRNG key.
      order: index of the lane's data order (0 when all lanes share one).
    """

    hparams: Mapping[str, jax.Array]
    key: jax.Array
    order: jax.Array


class Shared(NamedTuple):
    """The run's constants, shared by every lane.

    Attributes:
      data: the dataset (a pytree of arrays) batches are gathered from, or ``None``
        when batches arrive ready-made.
      val: validation batches stacked on a leading axis, or ``None``.
      tracking: the :class:`Tracking` numbers.
    """

    data: Any
    val: Any
    tracking: Tracking


class StepX(NamedTuple):
    """A step's inputs shared by all lanes (leaves carry a leading step axis per chunk).

    Attributes:
      step: the step index.
      active: False for padding past the last step.
      evaluate: validate after this step.
      hparams: ``name -> value`` hyperparameters of this step shared by all lanes.
      batch: batch indices ``(orders, [micro,] batch)`` into ``Shared.data``, or
        the ready-made batch.
    """

    step: jax.Array
    active: jax.Array
    evaluate: jax.Array
    hparams: Mapping[str, jax.Array]
    batch: Any


class LaneX(NamedTuple):
    """A step's per-lane inputs: ``name -> value`` hyperparameters of each lane at this step."""

    hparams: Mapping[str, jax.Array]


def _smooth(kind: str, ema: jax.Array, loss: jax.Array, step: jax.Array, beta: jax.Array):
    """Returns ``(new ema state, smoothed loss)`` (formulas in the module docstring)."""
    if kind == "debiased_ema":
        ema = beta * ema + (1 - beta) * loss
        return ema, ema / (1 - beta ** (step + 1).astype(jnp.float32))
    ema = jnp.where(step == 0, loss, beta * ema + (1 - beta) * loss)
    return ema, ema


def track(
    kind: str, tracker: Tracker, loss: jax.Array, step: jax.Array, tracking: Tracking
) -> tuple[Tracker, jax.Array]:
    """Updates a lane's :class:`Tracker` with this step's loss; returns it and the smoothed loss."""
    ema, smoothed = _smooth(kind, tracker.ema, loss, step, tracking.beta)
    starting = step < tracking.start_steps
    start = jnp.where(starting, tracker.start + (loss - tracker.start) / (step + 1), tracker.start)
    best = jnp.minimum(smoothed, tracker.best)
    blown_up = smoothed - best > (tracking.threshold - 1) * jnp.abs(best)
    fall = start - best
    rebounded = (
        ~starting
        & (fall > tracking.rebound_drop * jnp.abs(start))
        & (smoothed - best > tracking.rebound * fall)
    )
    bad = ~jnp.isfinite(loss) | ~jnp.isfinite(smoothed) | blown_up | rebounded
    alive = tracker.alive & ~bad
    new = Tracker(
        ema=jnp.where(alive, ema, tracker.ema),
        start=start,
        best=jnp.where(alive, best, tracker.best),
        alive=alive,
        diverged_at=jnp.where(tracker.alive & bad, step, tracker.diverged_at),
    )
    return new, smoothed


def lane_batch(data: Any, batch: Any, order: jax.Array) -> Any:
    """The lane's batch: gathered from ``data`` by its order's indices, or ``batch`` itself."""
    if data is None:
        return batch
    # One order shared by every lane: index it statically, so that under vmap the
    # gathered batch stays unbatched and the lanes' matmuls share their input.
    idx = batch[0] if batch.shape[0] == 1 else batch[order]
    return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), data)


def check_same_types(new: Any, old: Any, what: str) -> None:
    """Raises ``TypeError`` when a step changed the structure, shapes or dtypes of its state."""
    new_def, old_def = jax.tree.structure(new), jax.tree.structure(old)
    if new_def != old_def:
        raise TypeError(
            f"{what} must return its state with the same structure; got {new_def}, "
            f"expected {old_def}"
        )
    for (path, n), o in zip(
        jax.tree_util.tree_leaves_with_path(new), jax.tree.leaves(old), strict=True
    ):
        if jnp.shape(n) != jnp.shape(o) or jnp.result_type(n) != jnp.result_type(o):
            raise TypeError(
                f"{what} changed state{jax.tree_util.keystr(path)} from "
                f"{jnp.result_type(o)}{list(jnp.shape(o))} to "
                f"{jnp.result_type(n)}{list(jnp.shape(n))}; a step must keep every state "
                "leaf's shape and dtype (cast explicitly, e.g. count + 1 for an int counter)"
            )


def nan_like(tree: Any) -> Any:
    """Arrays shaped as ``tree``'s leaves: NaN (float32), or False for booleans."""

    def fill(s: Any) -> jax.Array:
        if s.dtype == bool:
            return jnp.zeros(s.shape, bool)
        return jnp.full(s.shape, jnp.nan, jnp.float32)

    return jax.tree.map(fill, tree)


@functools.lru_cache(maxsize=8)
def make_lane_step(
    task: Task, smoothing: str, evaluates: bool
) -> Callable[[LaneState, LaneConsts, Shared, StepX, LaneX], tuple[LaneState, Outputs]]:
    """Builds one lane's step ``(state, consts, shared, x, lane_x) -> (state, outputs)``.

    Jitted and cached per configuration, so that JAX traces the step once per
    argument shapes: the strategy rules' trace of one lane is reused by the
    program (under ``vmap``, ``scan`` and ``cond`` alike) instead of tracing
    the task's step (and its gradient) again.
    """

    def evaluate(train: Any, shared: Shared, key: jax.Array) -> Any:
        scores = jax.lax.map(lambda b: task.evaluate(train, b, key), shared.val)
        return jax.tree.map(lambda s: jnp.mean(s.astype(jnp.float32), axis=0), scores)

    def lane_step(state: LaneState, consts: LaneConsts, shared: Shared, x: StepX, lane_x: LaneX):
        hparams = {**consts.hparams, **x.hparams, **lane_x.hparams}
        batch = lane_batch(shared.data, x.batch, consts.order)
        key = jax.random.fold_in(jax.random.fold_in(consts.key, 0), x.step)
        train, loss = task.step(state.train, batch, hparams, key)
        check_same_types(train, state.train, "the train step")
        tracker, smoothed = track(smoothing, state.tracker, loss, x.step, shared.tracking)
        was_alive, nan = state.tracker.alive, jnp.float32(jnp.nan)
        evaluation = None
        if evaluates:
            val_key = jax.random.fold_in(consts.key, 1)
            shapes = jax.eval_shape(evaluate, train, shared, val_key)
            scores = jax.lax.cond(
                x.evaluate, lambda: evaluate(train, shared, val_key), lambda: nan_like(shapes)
            )
            evaluation = jax.tree.map(lambda s: jnp.where(tracker.alive, s, nan), scores)
        outputs = Outputs(
            loss=jnp.where(was_alive, loss, nan),
            smoothed=jnp.where(was_alive, smoothed, nan),
            flagged=was_alive & ~tracker.alive,
            evaluation=evaluation,
        )
        return LaneState(train, tracker), outputs

    return jax.jit(lane_step)
