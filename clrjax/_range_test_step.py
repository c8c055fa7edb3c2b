"""The LR range test on the user's own train step and train state."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from clrjax import _grid, _injected
from clrjax import _numerics as num
from clrjax._range_test import run_range_test
from clrjax._result import RangeTestResult
from clrjax._step_task import StepTask


def range_test_step(
    train_step: Callable[..., Any],
    train_state: Any,
    data: Any,
    *,
    batch_size: int = 128,
    num_steps: int = 100,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    ramp: str = "exp",
    ramp_convention: str = "torch",
    grid: Mapping[str, Sequence[float]] | None = None,
    seeds: Sequence[int] | None = None,
    init_fn: Callable[[jax.Array], Any] | None = None,
    key: jax.Array | int | None = None,
    takes_rng: bool = False,
    loss_key: str = "loss",
    shuffle: bool | str = True,
    smoothing: str = "debiased_ema",
    beta: float | str = "auto",
    diverge_threshold: float | None = 4.0,
    diverge_rebound: float | None = 0.5,
    rebound_min_drop: float = 0.2,
    val_data: Any = None,
    val_every: int = 1,
    val_batch_size: int | None = None,
    val_step: Callable[..., Any] | None = None,
    strategy: str = "auto",
    lane_group_size: int | None = None,
    shard_lanes: bool | None = None,
    driver: str = "auto",
    chunk_size: int | None = None,
    progress: bool | None = None,
    max_memory: float | None = None,
    mesh: jax.sharding.Mesh | None = None,
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
    (``train_step(state, batch, key)`` with ``takes_rng=True``: a PRNG key
    distinct per lane and step). ``metrics`` is the scalar training loss, or a
    mapping whose ``loss_key`` entry is. The new state must keep the structure,
    shapes and dtypes of the old.

    On the same loss, batches (``shuffle=False``) and optimizer, the curves are
    those of :func:`clrjax.range_test`; the options below mean the same there.

    Args:
      train_step: the train step (protocol above); it is traced, not changed.
      train_state: the initial train state; never modified. May be ``None`` with
        ``init_fn``.
      data: a pytree of arrays sharing a leading example axis, sampled in
        batches of ``batch_size``; or an iterable of ready batches.
      batch_size: examples per batch.
      num_steps: steps (>= 2).
      start_lr: learning rate of step 0 (> 0).
      end_lr: final learning rate (> ``start_lr``).
      ramp: ``"exp"`` or ``"linear"``.
      ramp_convention: ``"torch"`` (the last step uses ``end_lr``) or ``"fastai"``.
      grid: ``{name: values}`` of injected optimizer hyperparameters; lanes are
        the cartesian product in row-major order of the dict.
      seeds: integer seeds in ``[0, 2**32)``, the last grid axis ``"seed"``.
      init_fn: ``init_fn(lane_key) -> train_state``, replacing ``train_state``.
      key: a PRNG key or an int seed (``None``: seed 0).
      takes_rng: pass a PRNG key to ``train_step`` as its last argument.
      loss_key: the entry of mapping metrics that holds the loss.
      shuffle: ``True``, ``False`` or ``"per_seed"`` (as in ``range_test``).
      smoothing: ``"debiased_ema"`` (fastai) or ``"ema"`` (torch-lr-finder).
      beta: EMA coefficient in ``[0, 1)``, or ``"auto"`` (tied to the ramp).
      diverge_threshold: the divergence factor :math:`\tau` (> 1), or ``None``.
      diverge_rebound: the fraction of its fall a rebounding loss climbs back
        before the lane is flagged, or ``None``.
      rebound_min_drop: the fall, as a fraction of the start level, that arms
        the rebound rule.
      val_data: validation data, scored with ``val_step`` after every
        ``val_every``-th step.
      val_every: validation period in steps.
      val_batch_size: validation batch size (default: all at once).
      val_step: ``val_step(state, batch) -> metrics`` (the loss read as from
        ``train_step``); required with ``val_data``.
      strategy: ``"auto"``, ``"timed"``, ``"vmap"``, ``"serial"`` or ``"map"``
        (as in ``range_test``).
      lane_group_size: lanes per group for ``"serial"`` and ``"map"``.
      shard_lanes: split the lanes over all devices; ``None``: when there are several.
      driver: ``"auto"``, ``"scan"``, ``"chunks"`` or ``"python"``.
      chunk_size: steps per chunk.
      progress: show a tqdm bar; ``None``: when tqdm is installed and stderr is a terminal.
      max_memory: bytes the lanes may use per device.
      mesh: a ``jax.sharding.Mesh`` with the axes ``("lanes", "data")``: lanes
        split over ``"lanes"``, each lane's batch over ``"data"`` (``docs/scale.md``).

    Returns:
      A :class:`clrjax.RangeTestResult`.

    Raises:
      ValueError, TypeError: for invalid arguments, naming the argument; a state
        without an injected ``learning_rate`` (or grid value) says how to inject it.
      MemoryError: when not even one lane at a time fits ``max_memory``, or the
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
    num.check_flag("takes_rng", takes_rng)
    if train_state is None and init_fn is None:
        raise ValueError("train_state must be given unless init_fn is")
    if init_fn is not None:
        state_shape = num.checked_init(init_fn)
        what = "init_fn(key)"
    else:
        state_shape, what = train_state, "train_state"
    if not isinstance(loss_key, str):
        raise TypeError(f"loss_key must be a string, got {loss_key!r}")
    if val_data is not None and val_step is None:
        raise ValueError(
            "val_data needs val_step=...: a function val_step(state, batch) -> metrics "
            "(the loss, or a mapping with it under loss_key)"
        )
    if val_step is not None and not callable(val_step):
        raise TypeError(f"val_step must be callable, got {val_step!r}")
    lanes = _grid.expand_grid(grid, seeds)
    _injected.check_injected(state_shape, ("learning_rate", *lanes.optimizer_names), what)
    task = StepTask(
        train_step=train_step,
        val_step=val_step,
        loss_key=loss_key,
        takes_rng=bool(takes_rng),
        init_fn=init_fn,
    )
    return run_range_test(
        task,
        train_state,
        data,
        lanes=lanes,
        micro=1,
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
