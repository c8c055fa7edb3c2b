"""The LR range test: many candidate runs as lanes of one compiled program.

Three stages: :mod:`clrjax._lanes` builds the lanes (grid x seeds, LR ramp,
batch indices), :mod:`clrjax._driver` runs them in one jitted ``lax.scan``,
:mod:`clrjax._result` holds what was measured.
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

from clrjax import _driver, _lanes
from clrjax import _numerics as num
from clrjax._result import RangeTestResult

LANES = ("auto", *_driver.LANE_STRATEGIES)
DRIVERS = ("auto", *_driver.STEP_DRIVERS)
_DEFAULT_NUM_CHUNKS = 10


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
    lr_grid: str = "torch",
    optimizer: Callable[..., optax.GradientTransformation] | None = None,
    grid: Mapping[str, Sequence[float]] | None = None,
    seeds: Sequence[int] | None = None,
    init_fn: Callable[[jax.Array], Any] | None = None,
    key: jax.Array | int | None = None,
    has_aux: bool = False,
    rng: bool = False,
    state: Any = None,
    accumulation_steps: int = 1,
    shuffle: bool | str = True,
    compute_dtype: Any = None,
    smoothing: str = "debiased_ema",
    beta: float = 0.98,
    diverge_threshold: float | None = 4.0,
    stop_early: bool = True,
    val_data: Any = None,
    val_every: int = 1,
    val_batch_size: int | None = None,
    val_loss_fn: Callable[..., Any] | None = None,
    lanes: str = "auto",
    lane_batch_size: int | None = None,
    shard_lanes: bool = False,
    driver: str = "auto",
    chunk_size: int | None = None,
    progress: bool | None = None,
    max_memory: float | None = None,
) -> RangeTestResult:
    r"""Runs Smith's LR range test for every lane of a hyperparameter grid at once.

    Every lane starts from ``params`` (or ``init_fn(lane_key)``) and trains
    for ``num_steps`` steps while the learning rate ramps from ``start_lr`` to
    ``end_lr``; all lanes advance together in one jitted step, and the steps
    run inside ``lax.scan``. Learning rates and grid values are traced data: a
    second call that changes only their values reuses the compiled program.

    **Loss function protocol.** ``loss_fn(params, batch) -> loss`` (a floating
    scalar). With ``state`` given, ``loss_fn(params, state, batch)`` returns
    ``(loss, new_state)`` (mutable model state such as BatchNorm statistics,
    threaded through the steps, per lane). With ``rng=True`` a
    PRNG key (distinct per step and micro-batch) is passed as the last
    argument. With ``has_aux=True`` the loss output is ``(loss, aux)``, or
    ``(loss, (new_state, aux))`` with ``state``; ``aux`` is ignored.

    **Divergence.** With ``s_t`` the smoothed loss and ``b_t`` its running
    minimum, a lane diverges at the first step where the loss is NaN/Inf or
    :math:`s_t - b_t > (\tau - 1)|b_t|` (for positive losses exactly fastai's
    :math:`s_t > \tau b_t`; the absolute value keeps the rule meaningful for
    negative losses). From then on the lane's losses (and validation losses)
    are reported as NaN; lanes never mix, so its NaN/Inf values cannot reach
    another lane.

    Args:
      loss_fn: the loss function (protocol above).
      params: initial parameters (a pytree); never modified. May be ``None``
        with ``init_fn``.
      data: a pytree of arrays sharing a leading example axis (``(x, y)``,
        ``{"image": ..., "label": ...}``), sampled in batches of
        ``batch_size``; or a list/iterator/``DataLoader`` of ready batches
        (then ``batch_size`` and ``shuffle`` are not used; a re-iterable is
        restarted when exhausted, batches whose leading size differs from the
        first are skipped).
      batch_size: examples per micro-batch.
      num_steps: optimizer steps (>= 2).
      start_lr: learning rate of step 0 (> 0).
      end_lr: final learning rate (> ``start_lr``).
      ramp: ``"exp"`` (geometric) or ``"linear"``.
      lr_grid: ``"torch"``: step ``i`` uses position ``i / (num_steps - 1)``
        (torch-lr-finder; the last step uses ``end_lr``); ``"fastai"``:
        ``i / num_steps``.
      optimizer: factory ``(learning_rate, **hparams) -> GradientTransformation``
        whose numeric arguments may be traced; default
        :func:`clrjax._lanes.pytorch_sgd` (``torch.optim.SGD`` semantics:
        momentum 0.9, coupled weight decay 0).
      grid: ``{name: values}`` of optimizer arguments; lanes are the cartesian
        product in row-major order of the dict.
      seeds: integer seeds, added as the last grid axis ``"seed"``. A lane's
        key is ``fold_in(key, seed)``; it feeds ``init_fn``, the ``rng``
        passed to ``loss_fn``, and (with ``shuffle="per_seed"``) the data order.
      init_fn: ``init_fn(lane_key) -> params``, replacing ``params``.
      key: PRNG key or int seed for shuffling and lane keys (default 0).
      has_aux: ``loss_fn`` returns an auxiliary output (ignored).
      rng: pass a PRNG key to ``loss_fn`` (dropout etc.).
      state: initial mutable model state (see the protocol).
      accumulation_steps: micro-batches per step; gradients and losses are
        averaged over them.
      shuffle: ``True``: every epoch a new permutation, the same for all lanes;
        ``False``: sequential batches; ``"per_seed"``: each seed its own order.
      compute_dtype: e.g. ``jnp.bfloat16``: params and floating batch leaves
        are cast for the forward/backward pass; gradients, master params and
        optimizer state keep their dtype.
      smoothing: ``"debiased_ema"`` (fastai: bias-corrected EMA) or ``"ema"``
        (torch-lr-finder: first value = first loss, no bias correction).
      beta: EMA coefficient (fastai 0.98; torch-lr-finder's ``smooth_f=0.05``
        is ``beta=0.95``); 0 disables smoothing.
      diverge_threshold: :math:`\tau` (> 1) of the divergence rule (fastai 4,
        torch-lr-finder 5), or ``None`` to flag only NaN/Inf losses.
      stop_early: stop (between chunks) once every lane diverged.
      val_data: validation set (a pytree of arrays, or a list of batches),
        evaluated after the update of every ``val_every``-th step.
      val_every: validation period in steps.
      val_batch_size: validation batch size (default: the whole set at once;
        a remainder smaller than a batch is dropped).
      val_loss_fn: loss used for validation (same protocol; default ``loss_fn``).
      lanes: lane strategy: ``"vmap"`` (one batched step), ``"map"``
        (``lax.map`` over lanes, ``lane_batch_size`` at a time; default: as
        many as fit in memory), ``"sequential"`` (each lane's step written out
        after the previous one in the same program: unbatched, no loop),
        ``"serial"`` (``lax.map`` over lanes outside the steps: each lane, or
        group of ``lane_batch_size`` lanes, runs through a whole chunk of
        steps before the next; on CPU a large model's state then stays in
        cache, and a diverged lane skips its remaining steps),
        ``"sharded"`` (``"vmap"`` with the lanes split over
        all devices; over the most devices that divide the lane count) or
        ``"auto"``: lanes chunked as ``"map"`` when the memory estimate exceeds
        ``max_memory``, otherwise the fastest of the plausible strategies,
        timed on the first chunk (once per configuration and shapes; see
        ``result.strategy``).
      lane_batch_size: lanes per ``lax.map`` iteration with ``lanes="map"``
        or ``"serial"`` (``"serial"`` default: 1).
      shard_lanes: split the lanes of any strategy over all of
        ``jax.devices()`` (the number of lanes must be a multiple of the
        device count); data and validation batches are replicated.
        ``lanes="sharded"`` is ``"vmap"`` split this way over the most devices
        that divide the number of lanes.
      driver: ``"scan"`` (all steps in one ``lax.scan``), ``"chunks"``
        (``chunk_size`` steps per ``lax.scan``; progress bar and early stop
        between chunks), ``"unrolled"`` (chunks written out step after step,
        no loop), ``"python"`` (one step per call) or ``"auto"``: on CPU
        ``"python"`` for models with convolutions (XLA:CPU runs them ~10x
        slower inside loops), else ``"chunks"`` when ``stop_early``, a progress
        bar or several lane strategies need them, else ``"scan"``; lanes run
        ``"serial"`` use ``"scan"`` unless a progress bar or ``chunk_size``
        asks for chunks (a diverged lane skips its remaining steps there).
      chunk_size: steps per chunk (default ``ceil(num_steps / 10)``).
      progress: show a tqdm bar; ``None``: when tqdm is installed and stderr
        is a terminal.
      max_memory: bytes the lanes may use (``lanes="auto"``/``"map"``);
        default: 90% of the free accelerator memory, or half the available RAM.

    Returns:
      A :class:`clrjax.RangeTestResult`.

    Raises:
      ValueError, TypeError: for invalid arguments, naming the argument.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.random.normal(jax.random.key(0), (256, 3))
      >>> y = x @ jnp.array([1.0, -2.0, 0.5])
      >>> def loss_fn(w, batch):
      ...     xb, yb = batch
      ...     return jnp.mean((xb @ w - yb) ** 2)
      >>> result = range_test(loss_fn, jnp.zeros(3), (x, y), batch_size=32, num_steps=50,
      ...                     start_lr=1e-4, end_lr=10.0,
      ...                     grid={"weight_decay": [0.0, 1e-2]})
      >>> print(result.losses.shape, result.strategy)
      (2, 50) vmap/chunks
      >>> print(result.lane_label(1), bool(result.diverged_at[1] > 0))
      weight_decay=0.01 True
      >>> lrs = result.suggest()  # one suggested LR per lane (fastai's "valley")
      >>> print(lrs.shape, bool(1e-4 < lrs[0] < 10.0))
      (2,) True
    """
    # ---------------------------------------------------------------- stage 1
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
    num.check_count("num_steps", num_steps, minimum=2)
    lrs = _lanes.lr_ramp(start_lr, end_lr, num_steps, ramp, lr_grid)
    num.check_count("batch_size", batch_size)
    num.check_count("accumulation_steps", accumulation_steps)
    num.check_count("val_every", val_every)
    num.check_choice("smoothing", smoothing, _driver.SMOOTHINGS)
    num.check_choice("lanes", lanes, LANES)
    num.check_choice("driver", driver, DRIVERS)
    if not (isinstance(shuffle, bool) or shuffle == "per_seed"):
        raise ValueError(f"shuffle must be True, False or 'per_seed', got {shuffle!r}")
    num.check_number("beta", beta)
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    if diverge_threshold is not None:
        num.check_number("diverge_threshold", diverge_threshold)
        if not diverge_threshold > 1:
            raise ValueError(f"diverge_threshold must be > 1 or None, got {diverge_threshold!r}")
    if compute_dtype is not None:
        compute_dtype = jnp.dtype(compute_dtype)
        if not jnp.issubdtype(compute_dtype, jnp.floating):
            raise ValueError(f"compute_dtype must be a floating dtype, got {compute_dtype}")
    if params is None and init_fn is None:
        raise ValueError("params must be given unless init_fn is")
    if init_fn is None:
        _lanes.check_trainable("params", params)
        init_params = params
    else:
        init_params = jax.eval_shape(init_fn, jax.random.key(0))
        _lanes.check_trainable("init_fn(key)", init_params)
    optimizer = _lanes.pytorch_sgd if optimizer is None else optimizer
    lane_set = _lanes.expand_grid(grid, seeds)
    if "seed" in lane_set.hparams and init_fn is None and not rng and shuffle != "per_seed":
        warnings.warn(
            "seeds change nothing here: without init_fn, rng=True or shuffle='per_seed' "
            "every seed lane trains exactly like the others",
            UserWarning,
            stacklevel=2,
        )
    _lanes.check_optimizer_accepts(optimizer, lane_set.optimizer_names)
    if lane_batch_size is not None:
        num.check_count("lane_batch_size", lane_batch_size)
    if chunk_size is not None:
        num.check_count("chunk_size", chunk_size)
    if progress is None:
        progress = _tqdm_available() and sys.stderr.isatty()
    wants_chunks = "progress" if progress or chunk_size else "stop_early" if stop_early else ""
    if chunk_size is None:
        chunk_size = math.ceil(num_steps / _DEFAULT_NUM_CHUNKS)

    key = _lanes.as_key(key)
    data_key, keys = _lanes.split_keys(key, lane_set)
    device_data, idx, stream = _lanes.plan_batches(
        data,
        batch_size=batch_size,
        num_steps=num_steps,
        accumulation_steps=accumulation_steps,
        shuffle=shuffle,
        key=data_key,
        lanes=lane_set,
    )
    ctx: dict[str, Any] = {
        "data": device_data,
        "beta": np.float32(beta),  # NumPy: moved with the call, no device op of its own
        "threshold": np.float32(np.inf if diverge_threshold is None else diverge_threshold),
    }
    validate = val_data is not None
    val_now = np.zeros(num_steps, bool)
    if validate:
        ctx["val"] = _lanes.validation_batches(val_data, val_batch_size)
        val_now[val_every - 1 :: val_every] = True
    inputs = _lanes.StepInputs(lrs, val_now, accumulation_steps, idx, stream)

    # ---------------------------------------------------------------- stage 2
    cfg = _driver.StepConfig(
        loss_fn=loss_fn,
        optimizer=optimizer,
        val_loss_fn=loss_fn if val_loss_fn is None else val_loss_fn,
        has_aux=bool(has_aux),
        takes_rng=bool(rng),
        stateful=state is not None,
        compute_dtype=compute_dtype,
        smoothing=smoothing,
        indexed=stream is None,
        validate=validate,
        lanes=lanes,
        lane_batch_size=lane_batch_size,
        lane_shards=jax.device_count() if shard_lanes else 1,
        driver=driver,
    )
    consts = {
        "hparams": {k: np.asarray(v) for k, v in lane_set.optimizer_hparams().items()},
        "key": keys,
    }
    lr0 = np.asarray(lrs[0], num.float_dtype())

    def start(program: _driver.Program, lane_consts: Any) -> Any:
        if init_fn is None:
            return program.init(params, state, lane_consts, lr0)
        lane_state = jax.tree.map(
            lambda a: jnp.broadcast_to(a, (lane_set.num_lanes, *jnp.shape(a))), state
        )
        lane_params = jax.vmap(init_fn)(lane_consts["key"])
        return program.init_per_lane(lane_params, lane_state, lane_consts, lr0)

    cfg, chunk_size = _driver.resolve(
        cfg,
        num_lanes=lane_set.num_lanes,
        start=start,
        start_from=(init_params, state, lr0),
        consts=consts,
        ctx=ctx,
        inputs=inputs,
        num_steps=num_steps,
        chunk_size=chunk_size,
        max_memory=max_memory,
        wants_chunks=wants_chunks,
    )
    program, carry, consts, ctx = _driver.prepare(cfg, start, consts, ctx)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc="range test", unit="step", leave=False)
    try:
        carry, outputs, _ = _driver.drive(
            program,
            carry,
            consts,
            ctx,
            inputs,
            num_steps,
            chunk_size=chunk_size,
            stop_early=stop_early and cfg.driver != "scan",
            progress=bar,
        )
    finally:
        if bar is not None:
            bar.close()

    # ---------------------------------------------------------------- stage 3
    out = {k: _pad_nan(np.asarray(v).T, num_steps) for k, v in outputs.items()}
    return RangeTestResult(
        lrs=lrs,
        losses=out["loss"],
        smoothed=out["smoothed"],
        diverged_at=np.asarray(carry["diverged_at"]).astype(np.int64),
        hparams=dict(lane_set.hparams),
        grid_names=lane_set.grid_names,
        val_steps=np.flatnonzero(val_now) if validate else None,
        val_losses=out["val"][:, val_now] if validate else None,
        strategy=_driver.describe(cfg),
    )


def _tqdm_available() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def _pad_nan(a: np.ndarray, num_steps: int) -> np.ndarray:
    """``(lanes, steps_run)`` -> ``(lanes, num_steps)``, NaN for steps never run."""
    out = np.full((a.shape[0], num_steps), np.nan, np.float32)
    out[:, : a.shape[1]] = a
    return out
