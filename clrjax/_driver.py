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
   all lanes: ``"vmap"`` (one batched step), ``"map"`` (``lax.map`` over
   lanes, ``lane_batch_size`` lanes at a time, to bound memory),
   ``"sequential"`` (each lane's step written out after the previous one in
   the same program: plain, unbatched matmuls, no loop), ``"serial"``
   (``lax.map`` over lanes *outside* the steps: each lane, or group of
   ``lane_batch_size`` lanes, runs through the whole chunk of steps before
   the next starts, so its working set stays in cache) or
   ``"sharded"`` (``"vmap"`` with the lane axis split over a
   ``jax.sharding.Mesh`` of the devices);
3. a **step driver** (:data:`STEP_DRIVERS`): ``"scan"`` runs every step in one
   ``lax.scan``; ``"chunks"`` runs ``lax.scan`` over chunks of
   ``chunk_size`` steps, returning to Python between chunks (progress bar,
   early stop once every lane diverged); ``"unrolled"`` runs chunks without
   any loop or conditional (the steps written out one after another: XLA:CPU
   runs convolutions inside loops and conditionals about 10x slower,
   jax-ml/jax#12868); ``"python"`` is ``"unrolled"`` with one step per call.

:func:`resolve` turns ``"auto"`` into a concrete strategy: a memory estimate
(:func:`estimate_memory`) chunks the lanes when they would not fit, and when
several strategies are plausible the first steps are timed with each of them
(in turn, the fastest of a few runs; the choice is cached per configuration,
shapes, backend and lanes).

All hyperparameters, learning rates, the smoothing beta and the divergence
threshold are traced arguments, so :func:`get_program` compiles once per
static configuration (loss function, optimizer factory, flags) and array
shapes/dtypes; other values reuse the compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clrjax import _lanes

LANE_STRATEGIES = ("vmap", "map", "sequential", "serial", "sharded")
STEP_DRIVERS = ("scan", "chunks", "unrolled", "python")
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
      lane_batch_size: lanes per ``lax.map`` iteration (``"map"``; for
        ``"serial"`` the lanes of a group, default 1).
      lane_shards: devices the lane axis is split over (1: not split).
      driver: step driver, one of :data:`STEP_DRIVERS`.
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
    lane_shards: int = 1
    driver: str = "scan"


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
    elif isinstance(out, (tuple, list)):
        raise ValueError(
            f"loss_fn returned a {type(out).__name__} of {len(out)} values, not a scalar loss; "
            "pass has_aux=True for (loss, aux), or state=... for (loss, new_state)"
        )
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

        if num_micro == 1:  # no loop: XLA:CPU runs convolutions in loops ~10x slower
            batch = jax.tree.map(lambda a: a[0], batches)
            rng = jax.random.fold_in(key, 0)  # as the first micro-batch below
            (loss, new_model_state), grads = grad_fn(params, model_state, batch, rng)
        else:
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

        def same_dtypes(new, old):  # e.g. a float64 LR must not turn float32 state into f64
            return jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)

        # A diverged lane's params, optimizer and model state are not frozen: they are
        # never read back, its outputs are masked below, lanes never mix, and a
        # per-step jnp.where over the whole state cost up to ~20% of a dense step on CPU.
        new_state = {
            "params": same_dtypes(new_params, params),
            "opt_state": same_dtypes(new_opt_state, state["opt_state"]),
            "model_state": same_dtypes(new_model_state, model_state),
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
    injected = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
    is_injected = lambda node: isinstance(node, injected)
    if any(map(is_injected, jax.tree.leaves(opt_state, is_leaf=is_injected))):
        # Anywhere in the state (also inside optax.chain or masked): its update
        # reads the hyperparameters from the state, so the LR ramp would be ignored.
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


def num_lane_shards(num_lanes: int, num_devices: int) -> int:
    """The most devices (at most ``num_devices``) that split ``num_lanes`` evenly."""
    return max(d for d in range(1, min(num_lanes, num_devices) + 1) if num_lanes % d == 0)


def prepare(
    cfg: StepConfig, start: Callable[[Program, Any], Any], consts: Any, ctx: Any
) -> tuple[Program, Any, Any, Any]:
    """The program for ``cfg`` and its inputs placed on the devices.

    ``start(program, consts)`` builds the initial lane state. With
    ``cfg.lane_shards > 1`` the lane axis of ``consts`` and of the lane state
    is split over the first ``lane_shards`` devices and ``ctx`` is replicated
    there (:func:`clrjax._lanes.lane_placement`); new arrays are made, the
    caller's are never modified.

    Returns:
      ``(program, carry, consts, ctx)``.
    """
    program = get_program(cfg)
    if cfg.lane_shards == 1:
        return program, start(program, consts), consts, ctx
    num_lanes = len(jax.tree.leaves(consts)[0])
    placement = _lanes.lane_placement(num_lanes, jax.devices()[: cfg.lane_shards])
    consts, ctx = placement.lanes(consts), placement.replicated(ctx)
    return program, placement.lanes(start(program, consts)), consts, ctx


def _map_lanes(cfg: StepConfig, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Maps ``fn(lane_args..., shared...)`` over the lanes with the chosen strategy.

    ``fn(lane_tree, shared_tree)``: ``lane_tree`` leaves carry a leading lane
    axis, and so do the leaves of ``fn``'s result. A single lane is never
    batched: XLA:CPU runs a matmul with a batch dimension of 1 markedly slower.
    """
    if cfg.lanes == "map":
        return lambda lane_tree, shared: jax.lax.map(
            lambda t: fn(t, shared), lane_tree, batch_size=cfg.lane_batch_size
        )
    batched = jax.vmap(fn, in_axes=(0, None))  # "sharded": the placement splits the lanes

    def mapped(lane_tree, shared):
        num_lanes = len(jax.tree.leaves(lane_tree)[0])
        if cfg.lanes in ("vmap", "serial", "sharded") and num_lanes > 1:
            return batched(lane_tree, shared)
        # "sequential": each lane's step written out after the previous one (no loop)
        outputs = [
            fn(jax.tree.map(functools.partial(_row, i=i), lane_tree), shared)
            for i in range(num_lanes)
        ]
        return jax.tree.map(lambda *o: jnp.stack(o), *outputs)

    return mapped


def _row(a: jax.Array, i: int) -> jax.Array:
    return a[i]


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

    # "serial" steps one lane (or a lax.map batch of lanes) at a time: no lane axis
    step_lanes = step_one if cfg.lanes == "serial" else _map_lanes(cfg, step_one)

    def run_steps(carry, consts, ctx, xs, lane_xs):
        def advance(carry, x, lane_x):
            lane = {"state": carry, "consts": consts, "x": lane_x}
            return step_lanes(lane, {"ctx": ctx, "x": x})

        def skip(carry):  # padding step, or every lane already diverged
            nan = jnp.full(carry["alive"].shape, jnp.nan, jnp.float32)
            outputs = {"loss": nan, "smoothed": nan}
            if cfg.validate:
                outputs["val"] = nan
            return carry, outputs

        def body(carry, inputs):
            x, lane_x = inputs
            go = x["active"] & jnp.any(carry["alive"])
            if cfg.driver in ("scan", "chunks"):  # skips the work
                return jax.lax.cond(go, lambda c: advance(c, x, lane_x), skip, carry)
            stepped, skipped = advance(carry, x, lane_x), skip(carry)
            return jax.tree.map(lambda a, b: jnp.where(go, a, b), stepped, skipped)

        if cfg.driver in ("scan", "chunks"):
            return jax.lax.scan(body, carry, (xs, lane_xs))
        outputs = []  # "unrolled", "python": no loop construct at all
        for i in range(len(xs["step"])):
            carry, out = body(carry, jax.tree.map(functools.partial(_row, i=i), (xs, lane_xs)))
            outputs.append(out)
        return carry, jax.tree.map(lambda *o: jnp.stack(o), *outputs)

    def run(carry, consts, ctx, xs, lane_xs):
        if cfg.lanes != "serial":
            return run_steps(carry, consts, ctx, xs, lane_xs)

        def one_lane(lane):
            return run_steps(lane["carry"], lane["consts"], ctx, xs, lane["x"])

        lanes_first = jax.tree.map(lambda a: jnp.moveaxis(a, 1, 0), lane_xs)  # (lanes, steps, ...)
        lanes = {"carry": carry, "consts": consts, "x": lanes_first}
        carry, outputs = jax.lax.map(one_lane, lanes, batch_size=cfg.lane_batch_size)
        return carry, jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1), outputs)  # (steps, lanes)

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

    def join(*pieces):  # no device calls when one chunk holds exactly the steps
        joined = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces)
        return joined[:num_steps] if len(joined) > num_steps else joined

    return carry, jax.tree.map(join, *chunks), min(start, num_steps)


# ------------------------------------------------------------- choosing a strategy


def _bytes(tree: Any) -> int:
    return sum(
        math.prod(np.shape(a)) * np.dtype(getattr(a, "dtype", np.float32)).itemsize
        for a in jax.tree.leaves(tree)
        if not jnp.issubdtype(getattr(a, "dtype", np.float32), jax.dtypes.prng_key)
    )


def _walk(jaxpr: Any):
    """Yields every equation of ``jaxpr`` and of the jaxprs nested in it."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    yield from _walk(sub)


@dataclasses.dataclass(frozen=True)
class Footprint:
    """What one traced step of all lanes (``"vmap"``) holds, in bytes.

    Attributes:
      lane_state: params, optimizer and model state, smoothing state of all lanes.
      intermediates: every value the step computes (an upper bound of its
        temporary memory: XLA frees and fuses many of them).
      shared: the data and other run constants.
      convolutions: the step contains a convolution.
    """

    lane_state: int
    intermediates: int
    shared: int
    convolutions: bool

    def total(self, num_lanes: int, lanes_at_once: int) -> int:
        """Estimated peak bytes when ``lanes_at_once`` lanes step together."""
        per_lane = self.intermediates / num_lanes
        return int(2 * self.lane_state + self.shared + per_lane * lanes_at_once)


def estimate_memory(cfg: StepConfig, carry: Any, consts: Any, ctx: Any, xs: Any, lane_xs: Any):
    """Traces one step of all lanes (no compilation) and returns its :class:`Footprint`.

    ``carry`` may be arrays or ``jax.ShapeDtypeStruct``; ``xs``/``lane_xs`` hold one step.
    """
    cfg = dataclasses.replace(cfg, lanes="vmap", lane_shards=1, driver="python")
    step_lanes = _map_lanes(
        cfg,
        lambda lane, shared: make_lane_step(cfg)(
            lane["state"], lane["consts"], shared["ctx"], shared["x"], lane["x"]
        ),
    )
    one = jax.tree.map(lambda a: a[0], (xs, lane_xs))
    jaxpr = jax.make_jaxpr(
        lambda c, k, t, x, lx: step_lanes({"state": c, "consts": k, "x": lx}, {"ctx": t, "x": x})
    )(carry, consts, ctx, *one)
    eqns = list(_walk(jaxpr.jaxpr))
    return Footprint(
        lane_state=_bytes(carry),
        intermediates=sum(_bytes([v.aval for v in e.outvars]) for e in eqns),
        shared=_bytes(ctx),
        convolutions=any(e.primitive.name == "conv_general_dilated" for e in eqns),
    )


def memory_budget(max_memory: float | None) -> float:
    """Bytes the range test may use: ``max_memory``, else what the device has free.

    Accelerators: 90% of the free device memory; CPU: half of the available RAM
    (``MemAvailable``); unknown: no limit.
    """
    if max_memory is not None:
        return float(max_memory)
    stats = jax.devices()[0].memory_stats()
    if stats and "bytes_limit" in stats:
        return 0.9 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return 0.5 * int(line.split()[1]) * 1024
    except OSError:
        pass
    return math.inf


def lanes_that_fit(footprint: Footprint, num_lanes: int, budget: float) -> int:
    """The most lanes (1 .. ``num_lanes``) that may step together within ``budget``."""
    fits = [b for b in range(1, num_lanes + 1) if footprint.total(num_lanes, b) <= budget]
    return max(fits, default=1)


def describe(cfg: StepConfig) -> str:
    """The strategy label recorded in the result, e.g. ``"map[4]/chunks"``."""
    lanes = cfg.lanes
    if lanes == "map" or (lanes == "serial" and cfg.lane_batch_size not in (None, 1)):
        lanes += f"[{cfg.lane_batch_size}]"
    if lanes == "sharded":
        lanes += f"[{cfg.lane_shards}]"
    elif cfg.lane_shards > 1:  # shard_lanes=True with another strategy
        lanes += f"+sharded[{cfg.lane_shards}]"
    return f"{lanes}/{cfg.driver}"


_CHOICES: dict[Any, tuple[StepConfig, int]] = {}
_PROBE_MIN_BYTES = 1 << 20  # smaller steps take "vmap" untimed: timing would cost more
_SEQUENTIAL_MAX_LANES = 8  # "sequential" compiles one copy of the step per lane
_SERIAL_MIN_BYTES = 16 << 20  # lane state (all lanes) above which CPU probes "serial"
_PROBE_ROUNDS = 3  # timed runs of the first chunk per candidate (the fastest counts)


def _shape_key(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    dtype = lambda a: str(getattr(a, "dtype", type(a).__name__))
    return (str(treedef), *((np.shape(a), dtype(a)) for a in leaves))


def _time_strategies(cfgs, start, consts, ctx, inputs, probe_steps, chunk_size) -> list[float]:
    """Fastest of :data:`_PROBE_ROUNDS` runs of ``probe_steps`` steps with each of ``cfgs``.

    A first round compiles; the timed rounds take the candidates in turn, so
    that load from other processes hits them alike.
    """
    best = [math.inf] * len(cfgs)
    for timed in [False] + [True] * _PROBE_ROUNDS:
        for i, cfg in enumerate(cfgs):
            program, carry, lane_consts, shared_ctx = prepare(cfg, start, consts, ctx)
            jax.block_until_ready(carry)
            begin = time.perf_counter()
            _, outputs, _ = drive(
                program,
                carry,
                lane_consts,
                shared_ctx,
                inputs,
                probe_steps,
                chunk_size=chunk_size,
                stop_early=False,
            )
            jax.block_until_ready(outputs)
            if timed:
                best[i] = min(best[i], time.perf_counter() - begin)
    return best


def resolve(
    cfg: StepConfig,
    *,
    num_lanes: int,
    start: Callable[[Program, Any], Any],
    start_from: Any,
    consts: Any,
    ctx: Any,
    inputs: Callable[[int, int], tuple[Any, Any]],
    num_steps: int,
    chunk_size: int,
    max_memory: float | None,
    wants_chunks: str,
) -> tuple[StepConfig, int]:
    """Turns ``cfg.lanes``/``cfg.driver`` ``"auto"`` into a concrete strategy.

    * Memory: for ``"auto"`` and for ``"map"`` without ``lane_batch_size``,
      :func:`estimate_memory` bounds the lanes stepping together by the budget
      (``max_memory`` bytes, else :func:`memory_budget`); when not all fit,
      lanes run ``lax.map``-ped in chunks of that size.
    * Driver: ``"python"`` on CPU when the step has convolutions (XLA:CPU runs
      them ~10x slower inside loops); else ``"chunks"`` when ``wants_chunks``
      or several lane strategies are to be timed, else ``"scan"``.
      ``wants_chunks`` is ``"progress"`` (a progress bar or an explicit chunk
      size), ``"stop_early"`` (only to stop once every lane diverged) or
      ``""``. A ``"serial"`` winner runs with ``"scan"`` unless chunks are
      wanted for progress: its diverged lanes skip their remaining steps inside
      the program, and each lane then passes through the steps once (chunks
      reload every lane's state per chunk: ~10% on the 512-wide MLP).
    * Lanes: the candidates are ``"vmap"``, plus (unless the step computes less
      than 1 MiB) ``"serial"`` (on CPU when the lanes' state exceeds 16 MiB,
      beyond the caches; on accelerators for convolutions, which ``vmap``
      turns into grouped ones; never with the loop-free drivers),
      ``"sequential"`` on CPU up to 8 lanes (it compiles one copy of the step
      per lane), and ``"sharded"`` with several devices; with more than one
      candidate the first chunk is run with each (compiling each once), then
      three more times taking the candidates in turn, and the one with the
      fastest run is kept, cached per configuration, shapes, backend and lanes.
    * Data given as a stream of batches is never read ahead: no estimate, no
      timing; the first candidate (``"vmap"``) is taken.

    ``start_from`` is what ``start(program, consts)`` builds the lane state
    from (arrays or ``jax.ShapeDtypeStruct``, e.g. params, model state, first
    LR): its shapes and dtypes key the cache, so a cached choice costs no
    tracing.

    Returns:
      ``(cfg, chunk_size)`` with concrete ``lanes``, ``lane_batch_size``,
      ``lane_shards`` and ``driver``.
    """
    if cfg.lanes == "sharded":
        cfg = dataclasses.replace(cfg, lane_shards=num_lane_shards(num_lanes, jax.device_count()))
    if cfg.lanes not in ("auto", "map") and cfg.driver != "auto":
        return cfg, _chunk(cfg.driver, chunk_size, num_steps)
    key = (cfg, num_lanes, num_steps, chunk_size, max_memory, wants_chunks)
    key += (_shape_key((start_from, consts, ctx)), jax.default_backend(), jax.device_count())
    if key not in _CHOICES:
        probe_cfg = dataclasses.replace(cfg, lanes="vmap", driver="python")
        carry = jax.eval_shape(lambda k: start(get_program(probe_cfg), k), consts)
        if cfg.indexed:
            footprint = estimate_memory(cfg, carry, consts, ctx, *inputs(0, 1))
            fit = lanes_that_fit(footprint, num_lanes, memory_budget(max_memory))
        else:  # a stream of batches: reading one would consume it
            footprint, fit = Footprint(0, 0, 0, convolutions=False), num_lanes
        candidates = _candidates(cfg, num_lanes, footprint, fit, wants_chunks)
        probe_chunk = _chunk(candidates[0].driver, chunk_size, num_steps)
        if len(candidates) > 1 and cfg.indexed:
            probe_steps = min(num_steps, 4 if candidates[0].driver == "python" else probe_chunk)
            times = _time_strategies(
                candidates, start, consts, ctx, inputs, probe_steps, probe_chunk
            )
            candidates = [candidates[int(np.argmin(times))]]
        best = candidates[0]
        if _serial_scan(best, cfg, wants_chunks):
            best = dataclasses.replace(best, driver="scan")
        _CHOICES[key] = best, _chunk(best.driver, chunk_size, num_steps)
    return _CHOICES[key]


def _serial_scan(chosen: StepConfig, cfg: StepConfig, wants_chunks: str) -> bool:
    """Whether a ``"serial"`` choice runs with ``"scan"`` instead of ``"chunks"``."""
    return (
        chosen.lanes == "serial"
        and chosen.driver == "chunks"
        and cfg.driver == "auto"
        and wants_chunks != "progress"
    )


def _candidates(
    cfg: StepConfig, num_lanes: int, footprint: Footprint, fit: int, wants_chunks: str
) -> list[StepConfig]:
    """The concrete strategies worth timing for ``cfg`` (see :func:`resolve`)."""
    on_cpu = jax.default_backend() == "cpu"
    driver = cfg.driver
    if driver == "auto":
        driver = "python" if on_cpu and footprint.convolutions else "chunks"
    if cfg.lanes == "map" or (
        cfg.lanes != "serial"  # "serial" steps lane_batch_size lanes at a time anyway
        and (cfg.lane_batch_size is not None or (cfg.lanes == "auto" and fit < num_lanes))
    ):
        size = cfg.lane_batch_size or fit
        return [dataclasses.replace(cfg, lanes="map", lane_batch_size=size, driver=driver)]
    lanes = [cfg.lanes] if cfg.lanes != "auto" else ["vmap"]
    if cfg.lanes == "auto" and num_lanes > 1 and footprint.intermediates >= _PROBE_MIN_BYTES:
        # "serial" pays off on CPU once the lanes' state no longer fits in the caches
        # (512-wide MLP, 2 cores: 16 lanes (38 MB) 1.50 s vs 2.08 s for "vmap"; 4 lanes
        # (10 MB) 0.38 s for both), and on accelerators for convolutions, which vmap
        # turns into grouped ones (CIFAR-shaped CNN, 64 lanes, H100: 5.5 s vmapped vs
        # 2.3 s for a loop of single runs). Never a loop around convolutions on CPU.
        big_state = footprint.lane_state >= _SERIAL_MIN_BYTES
        if driver in ("scan", "chunks") and (big_state if on_cpu else footprint.convolutions):
            lanes.append("serial")
        if on_cpu and num_lanes <= _SEQUENTIAL_MAX_LANES:
            lanes.append("sequential")
        if jax.device_count() > 1 and cfg.lane_shards == 1:
            lanes.append("sharded")
    if len(lanes) == 1 and cfg.driver == "auto" and driver == "chunks" and not wants_chunks:
        driver = "scan"
    shards = num_lane_shards(num_lanes, jax.device_count())
    return [
        dataclasses.replace(
            cfg, lanes=c, lane_shards=shards if c == "sharded" else cfg.lane_shards, driver=driver
        )
        for c in lanes
    ]


def _chunk(driver: str, chunk_size: int, num_steps: int) -> int:
    return {"scan": num_steps, "python": 1}.get(driver, min(chunk_size, num_steps))
