"""The LR range test on the user's own train step and train state."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from clrjax import _grid, _injected
from clrjax import _numerics as num
from clrjax._options import (
    CURVE_KEYWORDS,
    EXECUTION_KEYWORDS,
    VALIDATION_KEYWORDS,
    Curve,
    Execution,
    Model,
    Validation,
    check_model_applies,
    moved_keywords,
    moved_to,
    resolve,
)
from clrjax._range_test import run_range_test, show_bar
from clrjax._result import RangeTestResult
from clrjax._step_task import StepTask

# What a train step holds itself (its model state, loss outputs and dtypes):
STEP_MODEL_REFUSED = ("state", "has_aux", "accumulation_steps", "compute_dtype")


@moved_keywords(
    {
        **CURVE_KEYWORDS,
        **moved_to("model", "init_fn takes_rng"),
        **VALIDATION_KEYWORDS,
        "val_step": ("validation", "step"),
        **EXECUTION_KEYWORDS,
    }
)
def range_test_step(
    train_step: Callable[..., Any],
    train_state: Any,
    data: Any,
    *,
    batch_size: int = 128,
    num_steps: int = 100,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    grid: Mapping[str, Sequence[float]] | None = None,
    seeds: Sequence[int] | None = None,
    key: jax.Array | int | None = None,
    shuffle: bool | str = True,
    loss_key: str = "loss",
    validation: Validation | None = None,
    model: Model | None = None,
    curve: Curve | None = None,
    execution: Execution | None = None,
) -> RangeTestResult:
    r"""Runs the LR range test with your own ``train_step`` and train state, unchanged.

    The train state (a Flax ``TrainState``, an ``nnx`` optimizer's split state,
    or any pytree) holds an optimizer made with ``optax.inject_hyperparams``,
    anywhere inside (also within ``optax.chain``). Before every step each lane's
    injected ``learning_rate`` is set to the ramp's value and its grid values
    (e.g. ``weight_decay``, ``momentum``, ``b1``) to the lane's; then
    ``train_step`` runs as written, once per lane, all lanes in one compiled
    program. The state passed in is never modified; new learning rates or grid
    values never recompile.

    **Train step protocol.** ``train_step(state, batch) -> (new_state, metrics)``
    (``train_step(state, batch, key)`` with ``Model(takes_rng=True)``: a PRNG key
    distinct per lane and step). ``metrics`` is the scalar training loss, or a
    mapping whose ``loss_key`` entry is. The new state must keep the structure,
    shapes and dtypes of the old.

    On the same loss, batches (``shuffle=False``) and optimizer, the curves are
    those of :func:`clrjax.range_test`; the options below mean the same there.

    Args:
      train_step: the train step (protocol above); it is traced, not changed.
      train_state: the initial train state; never modified. May be ``None`` with
        ``Model.init_fn``.
      data: a pytree of arrays sharing a leading example axis, sampled in
        batches of ``batch_size``; or an iterable of ready batches.
      batch_size: examples per batch.
      num_steps: steps (>= 2).
      start_lr: learning rate of step 0 (> 0).
      end_lr: final learning rate (> ``start_lr``).
      grid: ``{name: values}`` of injected optimizer hyperparameters; lanes are
        the cartesian product in row-major order of the dict.
      seeds: integer seeds in ``[0, 2**32)``, the last grid axis ``"seed"``.
      key: a PRNG key or an int seed (``None``: seed 0).
      shuffle: ``True``, ``False`` or ``"per_seed"`` (as in ``range_test``).
      loss_key: the entry of mapping metrics that holds the loss.
      validation: a :class:`clrjax.Validation` whose ``step(state, batch) ->
        metrics`` (required; the loss read as from ``train_step``) scores its
        ``data``, or ``None``.
      model: a :class:`clrjax.Model` with ``init_fn(lane_key) -> train_state``
        and ``takes_rng`` (its other fields are the train step's own).
      curve: a :class:`clrjax.Curve`: the ramp, smoothing and divergence rules.
      execution: an :class:`clrjax.Execution`: strategy, driver, sharding,
        memory budget, progress bar.

    Returns:
      A :class:`clrjax.RangeTestResult`.

    Raises:
      ValueError, TypeError: for invalid arguments, naming the argument; a state
        without an injected ``learning_rate`` (or grid value) says how to inject it;
        a keyword that moved into an option object names its new home.
      MemoryError: when not even one lane at a time fits ``Execution.max_memory``, or the
        per-step host arrays (``num_steps`` x the batch indices and the lanes'
        losses) would not fit in half the RAM.
      RangeTestInterrupted: on Ctrl-C, with the partial result.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, clrjax
      >>> x = jax.random.normal(jax.random.key(0), (256, 3))
      >>> y = x @ jnp.array([1.0, -2.0, 0.5])
      >>> tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
      >>> state = {"w": jnp.zeros(3), "opt": tx.init(jnp.zeros(3))}
      >>> def train_step(state, batch):
      ...     def loss_fn(w):
      ...         return jnp.mean((batch[0] @ w - batch[1]) ** 2)
      ...     loss, grad = jax.value_and_grad(loss_fn)(state["w"])
      ...     updates, opt = tx.update(grad, state["opt"], state["w"])
      ...     return {"w": optax.apply_updates(state["w"], updates), "opt": opt}, {"loss": loss}
      >>> result = clrjax.range_test_step(train_step, state, (x, y), batch_size=32,
      ...                                 num_steps=50, start_lr=1e-4, end_lr=10.0,
      ...                                 grid={"momentum": [0.0, 0.9]})
      >>> print(result.losses.shape, result.lane_label(1))
      (2, 50) momentum=0.9
    """
    if not callable(train_step):
        raise TypeError(f"train_step must be callable, got {train_step!r}")
    model, curve, execution = (
        resolve("model", model),
        resolve("curve", curve),
        resolve("execution", execution),
    )
    check_model_applies(model, "range_test_step", STEP_MODEL_REFUSED)
    if validation is not None:
        validation = resolve("validation", validation)
        if validation.loss_fn is not None:
            raise ValueError(
                "Validation.loss_fn does not apply to range_test_step; pass "
                "Validation.step, a function step(state, batch) -> metrics"
            )
        if validation.step is None:
            raise ValueError(
                "range_test_step's validation needs Validation.step: a function "
                "step(state, batch) -> metrics (the loss, or a mapping with it under loss_key)"
            )
    state_shape, what = start_state(train_state, model)
    if not isinstance(loss_key, str):
        raise TypeError(f"loss_key must be a string, got {loss_key!r}")
    lane_grid = _grid.expand_grid(grid, seeds)
    _injected.check_injected(state_shape, ("learning_rate", *lane_grid.optimizer_names), what)
    task = StepTask(
        train_step=train_step,
        val_step=None if validation is None else validation.step,
        loss_key=loss_key,
        takes_rng=bool(model.takes_rng),
        init_fn=model.init_fn,
    )
    return run_range_test(
        task,
        train_state,
        data,
        lane_grid=lane_grid,
        accumulation_steps=1,
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


def start_state(train_state: Any, model: Model, *, concrete: bool = False) -> tuple[Any, str]:
    """The train state to check (``init_fn``'s with ``Model.init_fn``) and what to call it."""
    if model.init_fn is not None:
        return num.checked_init(model.init_fn, concrete=concrete), "init_fn(key)"
    if train_state is None:
        raise ValueError("train_state must be given unless Model.init_fn is")
    return train_state, "train_state"
