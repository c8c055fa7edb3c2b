"""The LR range test: many candidate runs as lanes of one compiled program.

:func:`range_test` takes a loss function and an optimizer
(:class:`~clrjax._loss_task.LossTask`); :func:`clrjax.range_test_step` takes
the user's own train step (:class:`~clrjax._step_task.StepTask`). Both expand
the grid into lanes, ramp the learning rate and run the lanes once on the
engine (:func:`run_range_test`), which returns a :class:`RangeTestResult`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from clrjax import _engine, _grid
from clrjax import _numerics as num
from clrjax._loss_task import LossTask, check_optimizer, check_params
from clrjax._options import (
    CURVE_KEYWORDS,
    EXECUTION_KEYWORDS,
    VALIDATION_KEYWORDS,
    Curve,
    Execution,
    Model,
    Validation,
    engine_request,
    engine_tracking,
    learning_rates,
    moved_keywords,
    moved_to,
    resolve,
)
from clrjax._pytorch_sgd import pytorch_sgd
from clrjax._result import RangeTestResult


class RangeTestInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a range test; :attr:`result` holds the steps that completed.

    Raised between two calls of the compiled program (a progress bar, or
    ``Execution(driver="chunks")``, gives one call per chunk; ``"scan"`` is a
    single call, answered when it ends). Steps that did not run are NaN.

    Attributes:
      result: the partial :class:`~clrjax.RangeTestResult`.
    """

    def __init__(self, result: RangeTestResult, steps_run: int):
        super().__init__(f"range test interrupted after {steps_run} steps; see .result")
        self.result = result


@moved_keywords(
    {
        **CURVE_KEYWORDS,
        **moved_to("model", "init_fn state has_aux takes_rng accumulation_steps compute_dtype"),
        **VALIDATION_KEYWORDS,
        "val_loss_fn": ("validation", "loss_fn"),
        **EXECUTION_KEYWORDS,
    }
)
def range_test(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Any,
    *,
    batch_size: int = 128,
    num_steps: int = 100,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    optimizer: Callable[..., optax.GradientTransformation]
    | optax.GradientTransformation
    | None = None,
    grid: Mapping[str, Sequence[float]] | None = None,
    seeds: Sequence[int] | None = None,
    key: jax.Array | int | None = None,
    shuffle: bool | str = True,
    validation: Validation | None = None,
    model: Model | None = None,
    curve: Curve | None = None,
    execution: Execution | None = None,
) -> RangeTestResult:
    r"""Runs Smith's LR range test for every lane of a hyperparameter grid at once.

    Every lane starts from ``params`` (or ``Model.init_fn(lane_key)``) and trains
    for ``num_steps`` steps while the learning rate ramps from ``start_lr`` to
    ``end_lr``; all lanes advance together in one compiled program. Learning
    rates and grid values are traced data: a second call that changes only
    their values reuses the compiled program.

    **Loss function protocol.** ``loss_fn(params, batch) -> loss`` (a floating
    scalar). With ``Model(state=...)``, ``loss_fn(params, state, batch)`` returns
    ``(loss, new_state)`` (mutable model state such as BatchNorm statistics,
    threaded through the steps, per lane). With ``Model(takes_rng=True)`` a PRNG
    key (distinct per lane, step and micro-batch) is passed as the last argument.
    With ``Model(has_aux=True)`` the loss output is ``(loss, aux)``, or
    ``(loss, (new_state, aux))`` with ``state``; ``aux`` is ignored. A train
    step ``train_step(state, batch) -> (state, metrics)`` goes to
    :func:`clrjax.range_test_step` instead.

    **Divergence.** A lane diverges at the first step where its loss is
    NaN/Inf, or its smoothed loss rises above its running minimum by the
    factor ``Curve.diverge_threshold``, or rebounds (:class:`clrjax.Curve`).
    That step's loss is recorded; later ones are NaN (the lane is masked).
    Lanes never mix, so one lane's NaN/Inf cannot reach another; once every
    lane diverged the remaining steps are skipped.

    Args:
      loss_fn: the loss function (protocol above).
      params: initial parameters (a pytree of floating arrays); never modified.
        May be ``None`` with ``Model.init_fn``.
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
      optimizer: a factory ``(learning_rate, **hparams) -> GradientTransformation``
        whose numeric arguments may be traced (e.g. ``optax.adamw``), or an
        optimizer made with ``optax.inject_hyperparams`` (its injected
        ``learning_rate`` and grid values are set at every step); default
        :func:`clrjax.pytorch_sgd` (``torch.optim.SGD``: momentum 0.9, coupled
        weight decay 0).
      grid: ``{name: values}`` of optimizer arguments; lanes are the cartesian
        product in row-major order of the dict.
      seeds: integer seeds in ``[0, 2**32)``, added as the last grid axis
        ``"seed"``. A lane's key is ``fold_in(key, seed)``; it feeds
        ``Model.init_fn``, the key passed to ``loss_fn``, and
        (``shuffle="per_seed"``) the data order.
      key: a PRNG key or an int seed (``None``: seed 0) for the data order and lane keys.
      shuffle: ``True``: every epoch a new permutation, the same for all lanes;
        ``False``: sequential batches; ``"per_seed"``: each seed its own order.
      validation: a :class:`clrjax.Validation` (its ``data`` scored with its
        ``loss_fn``, default ``loss_fn``), or ``None``.
      model: a :class:`clrjax.Model`: ``init_fn``, model ``state``,
        ``has_aux``, ``takes_rng``, ``accumulation_steps``, ``compute_dtype``.
      curve: a :class:`clrjax.Curve`: the ramp, smoothing and divergence rules.
      execution: an :class:`clrjax.Execution`: strategy, driver, sharding,
        memory budget, progress bar.

    Returns:
      A :class:`clrjax.RangeTestResult`.

    Raises:
      ValueError, TypeError: for invalid arguments, naming the argument; a
        keyword that moved into an option object names its new home.
      MemoryError: when not even one lane at a time fits ``Execution.max_memory``, or the
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
    model, curve, execution = (
        resolve("model", model),
        resolve("curve", curve),
        resolve("execution", execution),
    )
    if validation is not None:
        validation = resolve("validation", validation)
        if validation.step is not None:
            raise ValueError(
                "Validation.step does not apply to range_test (it is range_test_step's "
                "val_step); pass Validation.loss_fn"
            )
    params, params_shape = start_params(params, model)
    lane_grid = _grid.expand_grid(grid, seeds)
    optimizer = pytorch_sgd if optimizer is None else optimizer
    check_optimizer(optimizer, lane_grid.optimizer_names, params_shape)
    val_loss_fn = None if validation is None else validation.loss_fn
    task = loss_task(loss_fn, optimizer, model, val_loss_fn=val_loss_fn)
    return run_range_test(
        task,
        (params, model.state),
        data,
        lane_grid=lane_grid,
        accumulation_steps=model.accumulation_steps,
        batch_size=batch_size,
        num_steps=num_steps,
        start_lr=start_lr,
        end_lr=end_lr,
        key=key,
        shuffle=shuffle,
        validation=validation,
        curve=curve,
        execution=execution,
        progress=show_bar(execution),
    )


def start_params(params: Any, model: Model) -> tuple[Any, Any]:
    """``(params, their shapes)``: ``(None, init_fn's shapes)`` with ``Model.init_fn``."""
    if model.init_fn is None:
        if params is None:
            raise ValueError("params must be given unless Model.init_fn is")
        check_params("params", params)
        return params, params
    params_shape = num.checked_init(model.init_fn)
    check_params("init_fn(key)", params_shape)
    return None, params_shape


def loss_task(
    loss_fn: Callable[..., Any],
    optimizer: Any,
    model: Model,
    *,
    val_loss_fn: Callable[..., Any] | None = None,
    val_metric: Callable[..., Any] | None = None,
) -> LossTask:
    """The :class:`LossTask` of ``loss_fn``, ``optimizer`` and ``model``."""
    return LossTask(
        loss_fn=loss_fn,
        optimizer=optimizer,
        val_loss_fn=loss_fn if val_loss_fn is None else val_loss_fn,
        val_metric=val_metric,
        has_aux=bool(model.has_aux),
        takes_rng=bool(model.takes_rng),
        stateful=model.state is not None,
        compute_dtype=model.compute_dtype,
        accumulation_steps=model.accumulation_steps,
        init_fn=model.init_fn,
    )


def show_bar(execution: Execution) -> bool:
    """``Execution.progress``, its ``None`` resolved: tqdm is installed and stderr a terminal."""
    if execution.progress is None:
        return _tqdm_available() and sys.stderr.isatty()
    return bool(execution.progress)


def run_range_test(
    task: _engine.Task,
    start: Any,
    data: Any,
    *,
    lane_grid: _grid.LaneGrid,
    accumulation_steps: int,
    batch_size: int,
    num_steps: int,
    start_lr: float,
    end_lr: float,
    key: Any,
    shuffle: bool | str,
    validation: Validation | None,
    curve: Curve,
    execution: Execution,
    progress: bool,
) -> RangeTestResult:
    """Validates the arguments both range tests share, runs the lanes, builds the result.

    The option objects were validated when built; ``progress`` is resolved.
    """
    num.check_count("num_steps", num_steps, minimum=2)
    num.check_count("batch_size", batch_size)
    orders = (
        len(set(lane_grid.seeds.tolist()))
        if shuffle == "per_seed" and lane_grid.seeds is not None
        else 1
    )
    check_host_memory(num_steps, lane_grid.num_lanes, orders * accumulation_steps * batch_size)
    lrs = learning_rates(curve, start_lr, end_lr, num_steps)
    if not (isinstance(shuffle, bool) or shuffle == "per_seed"):
        raise ValueError(f"shuffle must be True, False or 'per_seed', got {shuffle!r}")
    if shuffle == "per_seed" and lane_grid.seeds is None:
        raise ValueError("shuffle='per_seed' needs seeds")
    if (
        lane_grid.seeds is not None
        and task.init_fn is None
        and not task.takes_rng
        and not shuffle == "per_seed"
    ):
        warnings.warn(
            "seeds change nothing here: without Model.init_fn, Model.takes_rng=True or "
            "shuffle='per_seed' every seed lane trains exactly like the others (a PRNG state kept "
            "in the params or state, such as a Flax NNX module's nnx.Rngs, is the same in every "
            "lane). To seed dropout, take the lane's key with Model(takes_rng=True) and use it: "
            "rngs={'dropout': key} in a Flax linen apply, nnx.reseed(model, dropout=key) after "
            "nnx.merge in Flax NNX; to seed the initialisation, pass Model(init_fn=...)",
            UserWarning,
            stacklevel=4,  # the user's call, above the entry point and its moved_keywords
        )

    key = _grid.as_key(key)
    source, orders = _engine.plan_batches(
        data,
        batch_size=batch_size,
        num_steps=num_steps,
        accumulation_steps=accumulation_steps,
        shuffle=bool(shuffle),
        key=key,
        seeds=lane_grid.seeds if shuffle == "per_seed" else None,
    )
    val, evaluate = None, np.zeros(num_steps, bool)
    if validation is not None:
        like = source.stream.peek() if source.stream is not None else source.data
        val = _engine.validation_batches(validation.data, validation.batch_size, like)
        evaluate[validation.every - 1 :: validation.every] = True
    plan = _engine.StepPlan(
        num_steps=num_steps,
        hparams={"learning_rate": lrs.astype(num.float_dtype())},
        lane_hparams={},
        evaluate=evaluate,
        source=source,
    )
    spec = _engine.LaneSpec(
        num_lanes=lane_grid.num_lanes,
        hparams=lane_grid.optimizer_hparams(),
        seeds=lane_grid.seeds,
        orders=orders,
    )
    try:
        out = _engine.run(
            task,
            start,
            lanes=spec,
            plan=plan,
            key=key,
            val=val,
            smoothing=curve.smoothing,
            tracking=engine_tracking(curve, num_steps, start_lr, end_lr),
            request=engine_request(execution, progress=progress, label="range test"),
        )
    except _engine.Interrupted as stop:
        result = _result(stop.output, lrs, lane_grid, evaluate)
        raise RangeTestInterrupted(result, stop.output.steps_run) from None
    return _result(out, lrs, lane_grid, evaluate)


def check_host_memory(num_steps: int, num_lanes: int, indices_per_step: int) -> None:
    """Raises ``MemoryError`` when the per-step host arrays would not fit in half the RAM.

    Per step: the learning rate (float64 and a float32 copy), the batch indices
    (int32) and every lane's loss, smoothed loss and divergence flag (on the
    device and their host copies).
    """
    per_step = 12 + 4 * indices_per_step + 2 * 9 * num_lanes
    need, budget = num_steps * per_step, _engine.host_memory_budget()
    if need > budget:
        raise MemoryError(
            f"num_steps={num_steps} steps of {indices_per_step} examples (batch_size x "
            f"accumulation_steps x data orders) and {num_lanes} lanes need about "
            f"{need / 2**30:.1f} GiB of host memory for their per-step arrays (batch indices, "
            f"each lane's losses), more than half the available RAM ({budget / 2**30:.1f} GiB); "
            "run fewer steps (a range test needs a few hundred), smaller batches or fewer lanes"
        )


def _result(
    out: _engine.RunOutput, lrs: np.ndarray, lane_grid: _grid.LaneGrid, evaluate: np.ndarray
) -> RangeTestResult:
    validated = out.evaluations is not None
    return RangeTestResult(
        lrs=lrs,
        losses=out.losses,
        smoothed=out.smoothed,
        diverged_at=out.diverged_at,
        hparams=dict(lane_grid.hparams),
        grid_names=lane_grid.grid_names,
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
