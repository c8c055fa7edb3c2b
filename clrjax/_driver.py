"""Range test, stage 2: drive all lanes through the steps in one compiled program.

The stage is built from three small, swappable pieces:

1. a **lane step** (:func:`make_lane_step`): one training step of *one* lane,
   ``step(lane_state, lane_consts, ctx, x, lane_x) -> (lane_state, outputs)``,
   holding that lane's params, optimizer state, model state, smoothing state,
   alive flag and divergence step. ``lane_consts`` are its hyperparameters and
   PRNG key, ``ctx`` the run's constants (dataset, validation batches,
   smoothing beta, divergence threshold), ``x`` the step's shared inputs
   (step index, learning rate, batch or batch indices) and ``lane_x`` its
   per-lane inputs (per-lane batch indices, or nothing);
2. a **lane strategy** (:data:`LANE_STRATEGIES`) mapping the lane step over
   all lanes: ``"vmap"`` (one batched step) or ``"map"`` (``lax.map`` over
   lanes, ``lane_batch_size`` lanes at a time, to bound memory);
3. a **step driver** (:data:`STEP_DRIVERS`): ``"scan"`` runs every step in one
   ``lax.scan``; ``"chunks"`` runs ``lax.scan`` over chunks of
   ``chunk_size`` steps, returning to Python between chunks (progress bar,
   early stop once every lane diverged); ``"python"`` is ``"chunks"`` of one
   step.

All hyperparameters, learning rates, the smoothing beta and the divergence
threshold are traced arguments, so :func:`get_program` compiles once per
static configuration (loss function, optimizer factory, flags) and array
shapes/dtypes; other values reuse the compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

LANE_STRATEGIES = ("vmap", "map")
STEP_DRIVERS = ("scan", "chunks", "python")
SMOOTHINGS = ("debiased_ema", "ema")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything static about the compiled step (hashable: the program cache key).

    Attributes:
      loss_fn: the user's loss function (see ``range_test`` for the protocol).
      optimizer: factory ``(learning_rate, **hparams) -> GradientTransformation``.
      val_loss_fn: loss function used on validation batches (same protocol).
      has_aux: ``loss_fn`` returns ``(loss, aux)`` (``aux`` is ignored).
      takes_rng: ``loss_fn`` takes a PRNG key as its last argument.
      stateful: ``loss_fn`` takes and returns model state (e.g. BatchNorm stats).
      compute_dtype: dtype of params and floating batch leaves in the forward
        pass (``None``: unchanged); master params and the update stay as given.
      smoothing: ``"debiased_ema"`` (fastai) or ``"ema"`` (torch-lr-finder).
      indexed: batches are gathered from ``ctx["data"]`` by index (else they
        arrive stacked in ``x["batch"]``).
      validate: evaluate ``ctx["val"]`` when ``x["val_now"]``.
      lanes: lane strategy, one of :data:`LANE_STRATEGIES`.
      lane_batch_size: lanes per ``lax.map`` iteration (``"map"`` only).
    """

    loss_fn: Callable[..., Any]
    optimizer: Callable[..., optax.GradientTransformation]
    val_loss_fn: Callable[..., Any]
    has_aux: bool = False
    takes_rng: bool = False
    stateful: bool = False
    compute_dtype: Any = None
    smoothing: str = "debiased_ema"
    indexed: bool = True
    validate: bool = False
    lanes: str = "vmap"
    lane_batch_size: int | None = None


# ------------------------------------------------------------------ the lane step


def _cast_floats(tree: Any, dtype: Any) -> Any:
    if dtype is None:
        return tree
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def _call_loss(cfg: StepConfig, fn: Callable[..., Any], params, model_state, batch, rng):
    """Calls ``fn`` per the protocol; returns ``(float32 scalar loss, new model state)``."""
    args = [_cast_floats(params, cfg.compute_dtype)]
    if cfg.stateful:
        args.append(model_state)
    args.append(_cast_floats(batch, cfg.compute_dtype))
    if cfg.takes_rng:
        args.append(rng)
    out = fn(*args)
    if cfg.has_aux or cfg.stateful:
        if not (isinstance(out, tuple) and len(out) == 2):
            expected = "(loss, new_state)" if cfg.stateful else "(loss, aux)"
            raise ValueError(f"loss_fn must return {expected}, got {type(out).__name__}")
        loss, rest = out
        if cfg.stateful:
            model_state = rest[0] if cfg.has_aux else rest
    else:
        loss = out
    if jnp.shape(loss) != () or not jnp.issubdtype(jnp.result_type(loss), jnp.floating):
        raise ValueError(
            "loss_fn must return a floating scalar loss, got "
            f"shape {jnp.shape(loss)} dtype {jnp.result_type(loss)}"
        )
    return jnp.asarray(loss, jnp.float32), model_state


def _smooth(kind: str, ema, loss, step, beta):
    """Returns ``(new ema state, smoothed loss)``.

    ``"debiased_ema"`` (fastai ``AvgSmoothLoss``): ``v = beta v + (1 - beta) loss``
    from ``v = 0``, smoothed ``v / (1 - beta^(step + 1))``. ``"ema"``
    (torch-lr-finder): smoothed ``= loss`` at step 0, then
    ``beta smoothed + (1 - beta) loss``.
    """
    if kind == "debiased_ema":
        ema = beta * ema + (1 - beta) * loss
        return ema, ema / (1 - beta ** (step + 1).astype(jnp.float32))
    ema = jnp.where(step == 0, loss, beta * ema + (1 - beta) * loss)
    return ema, ema


def make_lane_step(cfg: StepConfig) -> Callable[..., Any]:
    """Builds the per-lane step ``(state, consts, ctx, x, lane_x) -> (state, outputs)``."""

    def objective(params, model_state, batch, rng):
        return _call_loss(cfg, cfg.loss_fn, params, model_state, batch, rng)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def micro_batches(ctx, x, lane_x):
        if cfg.indexed:
            idx = lane_x["idx"] if "idx" in lane_x else x["idx"]
            return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), ctx["data"])
        return x["batch"]

    def validate(params, model_state, ctx, key):
        def one(batch):
            loss, _ = _call_loss(cfg, cfg.val_loss_fn, params, model_state, batch, key)
            return loss

        return jnp.mean(jax.lax.map(one, ctx["val"]))

    def step(state, consts, ctx, x, lane_x):
        params, model_state = state["params"], state["model_state"]
        key = jax.random.fold_in(jax.random.fold_in(consts["key"], 0), x["step"])
        batches = micro_batches(ctx, x, lane_x)  # leaves: (accumulation_steps, batch, ...)
        num_micro = jax.tree.leaves(batches)[0].shape[0]

        def accumulate(carry, mb):
            grads, loss_sum, mstate, i = carry
            (loss, mstate), g = grad_fn(params, mstate, mb, jax.random.fold_in(key, i))
            return (jax.tree.map(jnp.add, grads, g), loss_sum + loss, mstate, i + 1), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        init = (zeros, jnp.zeros((), jnp.float32), model_state, jnp.zeros((), jnp.int32))
        (grads, loss_sum, new_model_state, _), _ = jax.lax.scan(accumulate, init, batches)
        grads = jax.tree.map(lambda g: g / num_micro, grads)
        loss = loss_sum / num_micro

        tx = cfg.optimizer(learning_rate=x["lr"], **consts["hparams"])
        updates, new_opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)

        ema, smoothed = _smooth(cfg.smoothing, state["ema"], loss, x["step"], ctx["beta"])
        best = jnp.where(smoothed < state["best"], smoothed, state["best"])
        # Relative rule that also works for negative losses: for best > 0 it is
        # exactly ``smoothed > threshold * best`` (fastai, torch-lr-finder).
        blown_up = smoothed - best > (ctx["threshold"] - 1) * jnp.abs(best)
        bad = ~jnp.isfinite(loss) | ~jnp.isfinite(smoothed) | blown_up
        was_alive = state["alive"]
        alive = was_alive & ~bad

        def keep(new, old):
            return jax.tree.map(lambda n, o: jnp.where(alive, n, o), new, old)

        new_state = {
            "params": keep(new_params, params),
            "opt_state": keep(new_opt_state, state["opt_state"]),
            "model_state": keep(new_model_state, model_state),
            "ema": jnp.where(alive, ema, state["ema"]),
            "best": jnp.where(alive, best, state["best"]),
            "alive": alive,
            "diverged_at": jnp.where(was_alive & bad, x["step"], state["diverged_at"]),
        }
        nan = jnp.float32(jnp.nan)
        outputs = {
            "loss": jnp.where(was_alive, loss, nan),
            "smoothed": jnp.where(was_alive, smoothed, nan),
        }
        if cfg.validate:
            val_key = jax.random.fold_in(consts["key"], 1)
            val = jax.lax.cond(
                x["val_now"],
                lambda: validate(new_state["params"], new_state["model_state"], ctx, val_key),
                lambda: nan,
            )
            outputs["val"] = jnp.where(alive, val, nan)
        return new_state, outputs

    return step


def init_lane_state(cfg: StepConfig, params, model_state, consts, lr0):
    """Initial state of one lane (params and model state are copied, never aliased)."""
    params = jax.tree.map(jnp.array, params)
    tx = cfg.optimizer(learning_rate=lr0, **consts["hparams"])
    opt_state = tx.init(params)
    if isinstance(opt_state, (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)):
        # Its update reads the hyperparameters from the state, so the LR ramp would be ignored.
        raise ValueError(
            "optimizer: pass the plain factory (e.g. optax.adam), not an "
            "optax.inject_hyperparams wrapper; range_test injects the hyperparameters itself"
        )
    return {
        "params": params,
        "opt_state": opt_state,
        "model_state": jax.tree.map(jnp.array, model_state),
        "ema": jnp.zeros((), jnp.float32),
        "best": jnp.full((), jnp.inf, jnp.float32),
        "alive": jnp.ones((), bool),
        "diverged_at": jnp.full((), -1, jnp.int32),
    }


# ------------------------------------------------------------- lane strategies


def _map_lanes(cfg: StepConfig, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Maps ``fn(lane_args..., shared...)`` over the lanes with the chosen strategy.

    ``fn(lane_tree, shared_tree)``: ``lane_tree`` leaves carry a leading lane axis.
    """
    if cfg.lanes == "vmap":
        return jax.vmap(fn, in_axes=(0, None))

    def mapped(lane_tree, shared):
        return jax.lax.map(lambda t: fn(t, shared), lane_tree, batch_size=cfg.lane_batch_size)

    return mapped


# ------------------------------------------------------------------ the program


@dataclasses.dataclass(frozen=True)
class Program:
    """The compiled pieces of a range test for one :class:`StepConfig`.

    Attributes:
      init: ``(params, model_state, consts, lr0) -> carry`` with a lane axis;
        ``params``/``model_state`` are shared (``init_fn`` handled by the caller).
      init_per_lane: as ``init`` but ``params``/``model_state`` already have a
        lane axis.
      run: ``(carry, consts, ctx, xs, lane_xs) -> (carry, outputs)`` over a
        chunk of steps (leading axis of ``xs``); outputs are ``(steps, lanes)``.
    """

    init: Callable[..., Any]
    init_per_lane: Callable[..., Any]
    run: Callable[..., Any]


@functools.lru_cache(maxsize=64)
def get_program(cfg: StepConfig) -> Program:
    """Builds (once per configuration) the jitted init and chunk-runner functions.

    ``run`` donates its ``carry`` (the lane state, created by ``init``, never
    the caller's arrays), so chunks update the lane state in place.
    """
    lane_step = make_lane_step(cfg)

    def init_one(lane, shared):
        return init_lane_state(
            cfg, lane["params"], lane["model_state"], lane["consts"], shared["lr0"]
        )

    def init_shared(lane, shared):
        lane = {"params": shared["params"], "model_state": shared["model_state"], **lane}
        return init_one(lane, shared)

    init_lanes, init_lanes_shared = _map_lanes(cfg, init_one), _map_lanes(cfg, init_shared)

    def init(params, model_state, consts, lr0):
        shared = {"params": params, "model_state": model_state, "lr0": lr0}
        return init_lanes_shared({"consts": consts}, shared)

    def init_per_lane(params, model_state, consts, lr0):
        lane = {"consts": consts, "params": params, "model_state": model_state}
        return init_lanes(lane, {"lr0": lr0})

    def step_one(lane, shared):
        return lane_step(lane["state"], lane["consts"], shared["ctx"], shared["x"], lane["x"])

    step_lanes = _map_lanes(cfg, step_one)

    def run(carry, consts, ctx, xs, lane_xs):
        def body(carry, inputs):
            x, lane_x = inputs

            def advance(carry):
                lane = {"state": carry, "consts": consts, "x": lane_x}
                return step_lanes(lane, {"ctx": ctx, "x": x})

            def skip(carry):  # padding step, or every lane already diverged
                nan = jnp.full(carry["alive"].shape, jnp.nan, jnp.float32)
                outputs = {"loss": nan, "smoothed": nan}
                if cfg.validate:
                    outputs["val"] = nan
                return carry, outputs

            return jax.lax.cond(x["active"] & jnp.any(carry["alive"]), advance, skip, carry)

        return jax.lax.scan(body, carry, (xs, lane_xs))

    return Program(
        init=jax.jit(init),
        init_per_lane=jax.jit(init_per_lane),
        run=jax.jit(run, donate_argnums=0),
    )


# ------------------------------------------------------------------ step drivers


def drive(
    program: Program,
    carry: Any,
    consts: Any,
    ctx: Any,
    inputs: Callable[[int, int], tuple[Any, Any]],
    num_steps: int,
    *,
    chunk_size: int,
    stop_early: bool,
    progress: Any = None,
) -> tuple[Any, dict[str, Any], int]:
    """Runs ``num_steps`` steps; returns ``(carry, outputs (steps, lanes), steps_run)``.

    ``inputs(start, length)`` returns the ``(xs, lane_xs)`` of steps
    ``start .. start + length - 1`` (steps past ``num_steps`` padded with
    ``active=False``). ``progress`` is ``None`` or a tqdm-like object with
    ``update(n)``.
    """
    chunks = []
    start = 0
    while start < num_steps:
        xs, lane_xs = inputs(start, chunk_size)
        carry, outputs = program.run(carry, consts, ctx, xs, lane_xs)
        chunks.append(outputs)
        start += chunk_size
        if progress is not None:
            progress.update(min(chunk_size, num_steps - (start - chunk_size)))
        if stop_early and start < num_steps and not bool(jnp.any(carry["alive"])):
            break
    outputs = jax.tree.map(lambda *c: jnp.concatenate(c)[:num_steps], *chunks)
    return carry, outputs, min(start, num_steps)
