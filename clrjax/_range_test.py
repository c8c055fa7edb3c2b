"""The LR range test: many candidate runs as lanes of one compiled program.

:func:`range_test` takes a loss function and an optimizer
(:class:`~clrjax._loss_task.LossTask`); :func:`clrjax.range_test_step` takes
the user's own train step (:class:`~clrjax._step_task.StepTask`). Both expand
the grid into lanes, ramp the learning rate and run the lanes once on the
engine (:func:`run_range_test`), which returns a :class:`RangeTestResult`.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clrjax import _engine, _grid, _ramp
from clrjax import _numerics as num
from clrjax._engine import strategy
from clrjax._engine.feeding import plan_batches, validation_batches
from clrjax._engine.lane_step import SMOOTHINGS
from clrjax._engine.runner import DRIVER_CHOICES, STRATEGIES
from clrjax._loss_task import LossTask, check_optimizer, check_params
from clrjax._pytorch_sgd import pytorch_sgd
from clrjax._result import RangeTestResult

AUTO_BETA_MAX = 0.98  # beta="auto" never smooths more than fastai's default
# The rebound rule's start level: the mean raw loss of the first tenth of the steps,
# and at least of this many (a start taken over 3 noisy batches armed it at once).
REBOUND_MIN_START_STEPS = 10


class RangeTestInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a range test; :attr:`result` holds the steps that completed.

    Raised between two calls of the compiled program (a progress bar, or
    ``driver="chunks"``, gives one call per chunk; ``driver="scan"`` is a
    single call, answered when it ends). Steps that did not run are NaN.

    Attributes:
      result: the partial :class:`~clrjax.RangeTestResult`.
    """

    def __init__(self, result: RangeTestResult, steps_run: int):
        super().__init__(f"range test interrupted after {steps_run} steps; see .result")
        self.result = result


def range_test(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Any,
    *,
    batch_size: int = 128,
    num_steps: int = 100,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    ramp: str = "exp",
    ramp_convention: str = "torch",
    optimizer: Callable[..., optax.GradientTransformation]
    | optax.GradientTransformation
    | None = None,
    grid: Mapping[str, Sequence[float]] | None = None,
    seeds: Sequence[int] | None = None,
    init_fn: Callable[[jax.Array], Any] | None = None,
    key: jax.Array | int | None = None,
    has_aux: bool = False,
    takes_rng: bool = False,
    state: Any = None,
    accumulation_steps: int = 1,
    shuffle: bool | str = True,
    compute_dtype: Any = None,
    smoothing: str = "debiased_ema",
    beta: float | str = "auto",
    diverge_threshold: float | None = 4.0,
    diverge_rebound: float | None = 0.5,
    rebound_min_drop: float = 0.2,
    val_data: Any = None,
    val_every: int = 1,
    val_batch_size: int | None = None,
    val_loss_fn: Callable[..., Any] | None = None,
    strategy: str = "auto",
    lane_group_size: int | None = None,
    shard_lanes: bool | None = None,
    driver: str = "auto",
    chunk_size: int | None = None,
    progress: bool | None = None,
    max_memory: float | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> RangeTestResult:
    r"""Runs Smith's LR range test for every lane of a hyperparameter grid at once.

    Every lane starts from ``params`` (or ``init_fn(lane_key)``) and trains
    for ``num_steps`` steps while the learning rate ramps from ``start_lr`` to
    ``end_lr``; all lanes advance together in one compiled program. Learning
    rates and grid values are traced data: a second call that changes only
    their values reuses the compiled program.

    **Loss function protocol.** ``loss_fn(params, batch) -> loss`` (a floating
    scalar). With ``state`` given, ``loss_fn(params, state, batch)`` returns
    ``(loss, new_state)`` (mutable model state such as BatchNorm statistics,
    threaded through the steps, per lane). With ``takes_rng=True`` a PRNG key
    (distinct per lane, step and micro-batch) is passed as the last argument.
    With ``has_aux=True`` the loss output is ``(loss, aux)``, or
    ``(loss, (new_state, aux))`` with ``state``; ``aux`` is ignored. A train
    step ``train_step(state, batch) -> (state, metrics)`` goes to
    :func:`clrjax.range_test_step` instead.

    **Divergence.** With ``s_t`` the smoothed loss and ``b_t`` its running
    minimum, a lane diverges at the first step where the loss is NaN/Inf, or
    :math:`s_t - b_t > (\tau - 1)|b_t|` (for positive losses exactly fastai's
    :math:`s_t > \tau b_t`), or it *rebounds*: with :math:`\bar\ell` the mean
    raw loss of the first tenth of the steps (at least 10), once the smoothed loss fell below
    :math:`\bar\ell` by more than ``rebound_min_drop`` of :math:`|\bar\ell|`
    and then climbed back more than ``diverge_rebound`` of that fall (a
    classifier collapsing back towards chance, which the :math:`\tau` rule
    misses; measured in ``docs/range_test.md``). That step's loss is recorded;
    later ones are NaN (the lane is masked). Lanes never mix, so one lane's
    NaN/Inf cannot reach another; once every lane diverged the remaining steps
    are skipped.

    Args:
      loss_fn: the loss function (protocol above).
      params: initial parameters (a pytree of floating arrays); never modified.
        May be ``None`` with ``init_fn``.
      data: a pytree of arrays sharing a leading example axis (``(x, y)``,
        ``{"image": ..., "label": ...}``), sampled in batches of
        ``batch_size``; or a list/iterator/``DataLoader`` of ready batches
        (then ``batch_size`` and ``shuffle`` are not used; a re-iterable is
        restarted when exhausted; batches smaller than the largest seen, such
        as an epoch's last, are skipped).
      batch_size: examples per micro-batch.
      num_steps: optimizer steps (>= 2).
      start_lr: learning rate of step 0 (> 0).
      end_lr: final learning rate (> ``start_lr``).
      ramp: ``"exp"`` (geometric) or ``"linear"``.
      ramp_convention: ``"torch"``: step ``i`` uses position ``i / (num_steps - 1)``
        (torch-lr-finder; the last step uses ``end_lr``); ``"fastai"``:
        ``i / num_steps``.
      optimizer: a factory ``(learning_rate, **hparams) -> GradientTransformation``
        whose numeric arguments may be traced (e.g. ``optax.adamw``), or an
        optimizer made with ``optax.inject_hyperparams`` (its injected
        ``learning_rate`` and grid values are set at every step); default
        :func:`clrjax.pytorch_sgd` (``torch.optim.SGD``: momentum 0.9, coupled
        weight decay 0).
      grid: ``{name: values}`` of optimizer arguments; lanes are the cartesian
        product in row-major order of the dict.
      seeds: integer seeds in ``[0, 2**32)``, added as the last grid axis
        ``"seed"``. A lane's key is ``fold_in(key, seed)``; it feeds ``init_fn``,
        the key passed to ``loss_fn``, and (``shuffle="per_seed"``) the data order.
      init_fn: ``init_fn(lane_key) -> params``, replacing ``params``.
      key: a PRNG key or an int seed (default 0) for the data order and lane keys.
      has_aux: ``loss_fn`` returns an auxiliary output (ignored).
      takes_rng: ``loss_fn`` takes a PRNG key last (dropout etc.).
      state: initial mutable model state (see the protocol).
      accumulation_steps: micro-batches per step; gradients and losses are
        averaged over them.
      shuffle: ``True``: every epoch a new permutation, the same for all lanes;
        ``False``: sequential batches; ``"per_seed"``: each seed its own order.
      compute_dtype: e.g. ``jnp.bfloat16``: params and floating batch leaves are
        cast for the forward/backward pass; gradients, master params and
        optimizer state keep their dtype.
      smoothing: ``"debiased_ema"`` (fastai: bias-corrected EMA) or ``"ema"``
        (torch-lr-finder: first value = first loss, no bias correction).
      beta: EMA coefficient in ``[0, 1)`` (fastai 0.98; torch-lr-finder's
        ``smooth_f=0.05`` is ``beta=0.95``; 0 disables smoothing), or
        ``"auto"``: tied to the ramp, an EMA time constant of half the steps per
        decade of learning rate, :math:`\beta = e^{-2/s}` with
        :math:`s = ` ``num_steps / log10(end_lr / start_lr)``, at most 0.98 (a
        fixed 0.98 over 100 steps and 8 decades lags the raw losses by a
        decade).
      diverge_threshold: :math:`\tau` (> 1) of the divergence rule (fastai 4,
        torch-lr-finder 5), or ``None``.
      diverge_rebound: the fraction (> 0) of its fall a rebounding loss climbs
        back before the lane is flagged, or ``None`` to turn the rule off (as
        fastai and torch-lr-finder have it). With ``diverge_threshold`` and
        this both ``None``, only NaN/Inf losses are flagged.
      rebound_min_drop: the fall, as a fraction of the start level, that arms
        the rebound rule (in ``[0, 1)``).
      val_data: validation set (a pytree of arrays shaped like ``data``, or a
        list of batches), evaluated after the update of every
        ``val_every``-th step.
      val_every: validation period in steps.
      val_batch_size: validation batch size (default: the whole set at once; a
        remainder smaller than a batch is dropped).
      val_loss_fn: loss used for validation (same protocol; default ``loss_fn``).
      strategy: how the lanes share the machine: ``"vmap"`` (one batched step),
        ``"serial"`` (lanes, or groups of ``lane_group_size``, one after another
        through the steps: unbatched matmuls, a lane's state stays in cache),
        ``"map"`` (every step maps over groups of ``lane_group_size`` lanes, to
        bound memory), ``"auto"`` (rules from the step's size, its
        convolutions, the device and the memory budget; see
        ``docs/range_test.md``) or ``"timed"`` (``"vmap"`` and ``"serial"``
        timed on the first chunk, the faster kept; cached per process).
      lane_group_size: lanes per group for ``"serial"`` and ``"map"``.
      shard_lanes: split the lanes over all devices (padded to a multiple of
        the device count); ``None``: when there are several devices. Data and
        validation batches are replicated.
      driver: ``"scan"`` (all steps in one call), ``"chunks"`` (``chunk_size``
        steps per call; a progress bar, an early stop and Ctrl-C between
        chunks), ``"python"`` (one loop-free step per call: XLA:CPU runs
        convolutions inside loops ~10x slower) or ``"auto"`` (``"python"`` for
        convolutions on CPU; ``"chunks"`` for a progress bar, a stream of
        batches or a run estimated to take over a second; else ``"scan"``).
      chunk_size: steps per chunk (default ``ceil(num_steps / 10)``).
      progress: show a tqdm bar; ``None``: when tqdm is installed and stderr
        is a terminal.
      max_memory: bytes the lanes may use per device; default: 90% of the free
        accelerator memory, or half the available RAM. Lanes that do not fit
        step in groups; a run that cannot fit even one lane at a time is refused.
      mesh: a ``jax.sharding.Mesh`` with the axes ``("lanes", "data")``: lanes
        split over ``"lanes"``, each lane's batch over ``"data"`` (``docs/scale.md``).

    Returns:
      A :class:`clrjax.RangeTestResult`.

    Raises:
      ValueError, TypeError: for invalid arguments, naming the argument.
      MemoryError: when not even one lane at a time fits ``max_memory``, or the
        per-step host arrays (``num_steps`` x the batch indices and the lanes'
        losses) would not fit in half the RAM.
      RangeTestInterrupted: on Ctrl-C, with the partial result.

    Examples:
      >>> import jax, jax.numpy as jnp, clrjax
      >>> x = jax.random.normal(jax.random.key(0), (256, 3))
      >>> y = x @ jnp.array([1.0, -2.0, 0.5])
      >>> def loss_fn(w, batch):
      ...     xb, yb = batch
      ...     return jnp.mean((xb @ w - yb) ** 2)
      >>> result = clrjax.range_test(loss_fn, jnp.zeros(3), (x, y), batch_size=32,
      ...                            num_steps=50, start_lr=1e-4, end_lr=10.0,
      ...                            grid={"weight_decay": [0.0, 1e-2]})
      >>> print(result.losses.shape)
      (2, 50)
      >>> print(result.lane_label(1), bool(result.diverged_at[1] > 0))
      weight_decay=0.01 True
      >>> lrs = result.suggest()  # one suggested LR per lane ("minimum")
      >>> print(lrs.shape, bool(1e-4 < lrs[0] < 10.0))
      (2,) True
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
    if val_loss_fn is not None and not callable(val_loss_fn):
        raise TypeError(f"val_loss_fn must be callable or None, got {val_loss_fn!r}")
    num.check_flag("has_aux", has_aux)
    num.check_flag("takes_rng", takes_rng)
    num.check_count("accumulation_steps", accumulation_steps)
    if compute_dtype is not None:
        compute_dtype = _check_dtype(compute_dtype)
    if params is None and init_fn is None:
        raise ValueError("params must be given unless init_fn is")
    if init_fn is None:
        check_params("params", params)
        params_shape = params
    else:
        params_shape = num.checked_init(init_fn)
        check_params("init_fn(key)", params_shape)
        params = None
    num.check_arrays("state", state)
    lanes = _grid.expand_grid(grid, seeds)
    optimizer = pytorch_sgd if optimizer is None else optimizer
    check_optimizer(optimizer, lanes.optimizer_names, params_shape)
    task = LossTask(
        loss_fn=loss_fn,
        optimizer=optimizer,
        val_loss_fn=loss_fn if val_loss_fn is None else val_loss_fn,
        has_aux=bool(has_aux),
        takes_rng=bool(takes_rng),
        stateful=state is not None,
        compute_dtype=compute_dtype,
        accumulation_steps=accumulation_steps,
        init_fn=init_fn,
    )
    return run_range_test(
        task,
        (params, state),
        data,
        lanes=lanes,
        micro=accumulation_steps,
        batch_size=batch_size,
        num_steps=num_steps,
        start_lr=start_lr,
        end_lr=end_lr,
        ramp=ramp,
        ramp_convention=ramp_convention,
        key=key,
        shuffle=shuffle,
        smoothing=smoothing,
        beta=beta,
        diverge_threshold=diverge_threshold,
        diverge_rebound=diverge_rebound,
        rebound_min_drop=rebound_min_drop,
        val_data=val_data,
        val_every=val_every,
        val_batch_size=val_batch_size,
        strategy=strategy,
        lane_group_size=lane_group_size,
        shard_lanes=shard_lanes,
        driver=driver,
        chunk_size=chunk_size,
        progress=progress,
        max_memory=max_memory,
        mesh=mesh,
    )


def _check_dtype(compute_dtype: Any) -> np.dtype:
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError as e:
        raise TypeError(
            f"compute_dtype must be a floating dtype (e.g. jnp.bfloat16), got {compute_dtype!r}"
        ) from e
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"compute_dtype must be a floating dtype, got {dtype}")
    return dtype


def run_range_test(
    task: Any,
    start: Any,
    data: Any,
    *,
    lanes: _grid.LaneGrid,
    micro: int,
    batch_size: int,
    num_steps: int,
    start_lr: float,
    end_lr: float,
    ramp: str,
    ramp_convention: str,
    key: Any,
    shuffle: bool | str,
    smoothing: str,
    beta: float | str,
    diverge_threshold: float | None,
    diverge_rebound: float | None,
    rebound_min_drop: float,
    val_data: Any,
    val_every: int,
    val_batch_size: int | None,
    strategy: str,
    lane_group_size: int | None,
    shard_lanes: bool | None,
    driver: str,
    chunk_size: int | None,
    progress: bool | None,
    max_memory: float | None,
    mesh: jax.sharding.Mesh | None,
) -> RangeTestResult:
    """Validates the options both range tests share, runs the lanes, builds the result."""
    num.check_count("num_steps", num_steps, minimum=2)
    num.check_count("batch_size", batch_size)
    orders = (
        len(set(lanes.seeds.tolist())) if shuffle == "per_seed" and lanes.seeds is not None else 1
    )
    check_host_memory(num_steps, lanes.num_lanes, orders * micro * batch_size)
    lrs = _ramp.lr_ramp(start_lr, end_lr, num_steps, ramp, ramp_convention)
    num.check_count("val_every", val_every)
    if val_batch_size is not None:
        num.check_count("val_batch_size", val_batch_size)
    num.check_choice("smoothing", smoothing, SMOOTHINGS)
    num.check_choice("strategy", strategy, STRATEGIES)
    num.check_choice("driver", driver, DRIVER_CHOICES)
    if not (isinstance(shuffle, bool) or shuffle == "per_seed"):
        raise ValueError(f"shuffle must be True, False or 'per_seed', got {shuffle!r}")
    if shuffle == "per_seed" and lanes.seeds is None:
        raise ValueError("shuffle='per_seed' needs seeds")
    if (
        lanes.seeds is not None
        and task.init_fn is None
        and not task.takes_rng
        and not shuffle == "per_seed"
    ):
        warnings.warn(
            "seeds change nothing here: without init_fn, takes_rng=True or shuffle='per_seed' "
            "every seed lane trains exactly like the others (a PRNG state kept in the params "
            "or state, such as a Flax NNX module's nnx.Rngs, is the same in every lane). To "
            "seed dropout, take the lane's key with takes_rng=True and use it: rngs={'dropout': "
            "key} in a Flax linen apply, nnx.reseed(model, dropout=key) after nnx.merge in Flax "
            "NNX; to seed the initialisation, pass init_fn(key)",
            UserWarning,
            stacklevel=3,
        )
    beta = (
        ramp_beta(num_steps, start_lr, end_lr) if isinstance(beta, str) and beta == "auto" else beta
    )
    num.check_scalar("beta", beta)
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1) or 'auto', got {beta!r}")
    if diverge_threshold is not None:
        num.check_scalar("diverge_threshold", diverge_threshold)
        if not diverge_threshold > 1:
            raise ValueError(f"diverge_threshold must be > 1 or None, got {diverge_threshold!r}")
    if diverge_rebound is not None:
        num.check_scalar("diverge_rebound", diverge_rebound)
        num.check_positive("diverge_rebound", diverge_rebound)
    num.check_scalar("rebound_min_drop", rebound_min_drop)
    if not 0 <= rebound_min_drop < 1:
        raise ValueError(f"rebound_min_drop must be in [0, 1), got {rebound_min_drop!r}")
    for name, value in (("lane_group_size", lane_group_size), ("chunk_size", chunk_size)):
        if value is not None:
            num.check_count(name, value)
    if shard_lanes is not None and not isinstance(shard_lanes, bool):
        raise TypeError(f"shard_lanes must be True, False or None, got {shard_lanes!r}")
    if max_memory is not None:
        num.check_scalar("max_memory", max_memory)
        num.check_positive("max_memory", max_memory)
    num.check_flag("progress", progress, allow_none=True)
    if progress is None:
        progress = _tqdm_available() and sys.stderr.isatty()

    key = _grid.as_key(key)
    source, orders = plan_batches(
        data,
        batch_size=batch_size,
        num_steps=num_steps,
        micro=micro,
        shuffle=bool(shuffle),
        key=key,
        seeds=lanes.seeds if shuffle == "per_seed" else None,
    )
    val, evaluate = None, np.zeros(num_steps, bool)
    if val_data is not None:
        like = source.stream.peek() if source.stream is not None else source.data
        val = validation_batches(val_data, val_batch_size, like)
        evaluate[val_every - 1 :: val_every] = True
    plan = _engine.StepPlan(
        num_steps=num_steps,
        hparams={"learning_rate": lrs.astype(num.float_dtype())},
        lane_hparams={},
        evaluate=evaluate,
        source=source,
    )
    spec = _engine.LaneSpec(
        num_lanes=lanes.num_lanes,
        hparams=lanes.optimizer_hparams(),
        seeds=lanes.seeds,
        orders=orders,
    )
    request = _engine.Request(
        strategy=strategy,
        group=lane_group_size,
        driver=driver,
        chunk_size=chunk_size,
        shard=shard_lanes,
        mesh=mesh,
        max_memory=max_memory,
        progress=bool(progress),
    )
    tracking = _engine.Tracking(
        beta=beta,
        threshold=math.inf if diverge_threshold is None else diverge_threshold,
        rebound=math.inf if diverge_rebound is None else diverge_rebound,
        rebound_drop=rebound_min_drop,
        start_steps=max(REBOUND_MIN_START_STEPS, num_steps // 10),
    )
    try:
        out = _engine.run(
            task,
            start,
            lanes=spec,
            plan=plan,
            key=key,
            val=val,
            smoothing=smoothing,
            tracking=tracking,
            request=request,
        )
    except _engine.Interrupted as stop:
        result = _result(stop.output, lrs, lanes, evaluate)
        raise RangeTestInterrupted(result, stop.output.steps_run) from None
    return _result(out, lrs, lanes, evaluate)


def ramp_beta(num_steps: int, start_lr: float, end_lr: float) -> float:
    """``beta="auto"``: an EMA time constant of half the ramp's steps per decade (<= 0.98).

    Examples:
      >>> print(round(ramp_beta(100, 1e-7, 10.0), 3), ramp_beta(10_000, 1e-7, 10.0))
      0.852 0.98
    """
    _ramp.check_lr_range(start_lr, end_lr)
    steps_per_decade = num_steps / max(math.log10(float(end_lr) / float(start_lr)), 1e-12)
    return min(AUTO_BETA_MAX, math.exp(-2.0 / steps_per_decade))


def check_host_memory(num_steps: int, num_lanes: int, indices_per_step: int) -> None:
    """Raises ``MemoryError`` when the per-step host arrays would not fit in half the RAM.

    Per step: the learning rate (float64 and a float32 copy), the batch indices
    (int32) and every lane's loss, smoothed loss and divergence flag (on the
    device and their host copies).
    """
    per_step = 12 + 4 * indices_per_step + 2 * 9 * num_lanes
    need, budget = num_steps * per_step, strategy.host_memory_budget()
    if need > budget:
        raise MemoryError(
            f"num_steps={num_steps} steps of {indices_per_step} examples (batch_size x "
            f"accumulation_steps x data orders) and {num_lanes} lanes need about "
            f"{need / 2**30:.1f} GiB of host memory for their per-step arrays (batch indices, "
            f"each lane's losses), more than half the available RAM ({budget / 2**30:.1f} GiB); "
            "run fewer steps (a range test needs a few hundred), smaller batches or fewer lanes"
        )


def _result(
    out: _engine.RunOutput, lrs: np.ndarray, lanes: _grid.LaneGrid, evaluate: np.ndarray
) -> RangeTestResult:
    validated = out.evaluations is not None
    return RangeTestResult(
        lrs=lrs,
        losses=out.losses,
        smoothed=out.smoothed,
        diverged_at=out.diverged_at,
        hparams=dict(lanes.hparams),
        grid_names=lanes.grid_names,
        val_steps=np.flatnonzero(evaluate) if validated else None,
        val_losses=out.evaluations["loss"] if validated else None,
        strategy=out.strategy,
    )


def _tqdm_available() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True
