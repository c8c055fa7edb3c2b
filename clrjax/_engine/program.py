"""The compiled program of one configuration: lane initialisation and a step runner.

Everything numeric (hyperparameters, learning rates, keys, the divergence
rule's numbers, the data) is a traced argument, so a configuration compiles
once per array shapes and dtypes; new values reuse the program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clrjax._engine.lane_step import (
    LaneState,
    Tracker,
    make_lane_step,
    nan_like,
)
from clrjax._engine.placement import Placement, map_lanes, over_mesh
from clrjax._engine.task import Task

DRIVERS = ("scan", "chunks", "python")

# Compiled programs kept per process: each holds the user's functions and its
# executables alive, so the cache is small (a new lambda per call compiles anew).
PROGRAM_CACHE_SIZE = 8

# XLA:CPU compiles the engine's programs about a third faster with its classic
# loop emitters than with its newer fusion emitters, and 5-16% faster again
# with LLVM's optimization level 2 instead of its default 3, and runs them as
# fast (`benchmarks/profile_range_test.py --compiler-options`, docs/benchmarks.md).
# Passed only where this XLA knows the options.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 2}


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """Everything static about a program (hashable: the cache key).

    Attributes:
      task: the :class:`~clrjax._engine.task.Task`.
      smoothing: ``"debiased_ema"`` or ``"ema"``.
      evaluates: the run validates (the task's ``evaluate`` is used).
      seeded: lane keys are ``fold_in(key, seed)`` (else every lane uses ``key``).
      placement: the :class:`~clrjax._engine.placement.Placement`.
      driver: one of :data:`DRIVERS`: ``"python"`` runs one step per call and
        has no loop or conditional (XLA:CPU runs convolutions inside loops about
        10x slower, jax-ml/jax#12868); the others run a ``lax.scan`` over a chunk
        whose steps are skipped (``lax.cond``) once every lane diverged.
    """

    task: Task
    smoothing: str
    evaluates: bool
    seeded: bool
    placement: Placement
    driver: str


class Program(NamedTuple):
    """The jitted functions of a :class:`ProgramSpec`.

    Attributes:
      init: ``(start, key, seeds, consts_hparams, step0_hparams,
        lane_step0_hparams) -> (lane states, lane keys)`` with a lane axis
        (``start`` is shared by all lanes).
      run: ``(carry, consts, shared, xs, lane_xs) -> (carry, outputs)``, one
        chunk of steps (leading axis of ``xs``); outputs are ``(steps, lanes)``.
        The carry is donated: the lane state is updated in place.
    """

    init: Callable[..., Any]
    run: Callable[..., Any]


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def get_program(spec: ProgramSpec) -> Program:
    """Builds (once per :class:`ProgramSpec`) the jitted init and step runner."""
    init, run = _init_fn(spec), _run_fn(spec)
    mesh = spec.placement.mesh
    if mesh is not None:
        init, run = over_mesh(init, run, mesh)
    platform = jax.default_backend() if mesh is None else mesh.devices.flat[0].platform
    options = compiler_options(platform)
    return Program(
        init=jax.jit(init, compiler_options=options),
        run=jax.jit(run, donate_argnums=0, compiler_options=options),
    )


@functools.cache
def compiler_options(platform: str) -> dict[str, Any] | None:
    """:data:`CPU_COMPILER_OPTIONS` on CPU where XLA accepts them (tried once); else ``None``."""
    if platform != "cpu":
        return None
    one = jax.device_put(np.float32(1), jax.local_devices(backend="cpu")[0])
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS)(one)
    except jax.errors.JaxRuntimeError:  # an XLA without the option
        return None
    return CPU_COMPILER_OPTIONS


def _init_fn(spec: ProgramSpec) -> Callable[..., Any]:
    def init_one(lane: Any, shared: Any) -> Any:
        seed, hparams, lane_step0 = lane
        start, key, step0 = shared
        key = jax.random.fold_in(key, seed) if spec.seeded else key
        train = spec.task.init(start, {**hparams, **step0, **lane_step0}, key)
        return LaneState(train, Tracker.initial()), key

    init_lanes = map_lanes(Placement("vmap"), init_one)

    def init(start, key, seeds, hparams, step0, lane_step0):
        return init_lanes((seeds, hparams, lane_step0), (start, key, step0))

    return init


def _run_fn(spec: ProgramSpec) -> Callable[..., Any]:
    lane_step = make_lane_step(spec.task, spec.smoothing, spec.evaluates)

    def step_one(lane: Any, shared: Any) -> Any:
        state, consts, lane_x = lane
        run_consts, x = shared
        return lane_step(state, consts, run_consts, x, lane_x)

    step_lanes = map_lanes(spec.placement, step_one)

    def run_steps(step, carry, consts, shared, xs, lane_xs):
        """``step`` (``step_one`` or ``step_lanes``) through a chunk of steps."""
        if spec.driver == "python":  # one step, no loop, no conditional
            x, lane_x = jax.tree.map(lambda a: a[0], (xs, lane_xs))
            carry, outputs = step((carry, consts, lane_x), (shared, x))
            return carry, jax.tree.map(lambda a: a[None], outputs)

        def body(carry, inputs):
            x, lane_x = inputs
            stepped = lambda c: step((c, consts, lane_x), (shared, x))
            skipped = nan_like(jax.eval_shape(stepped, carry)[1])
            go = x.active & jnp.any(carry.tracker.alive)  # padding, or every lane diverged
            return jax.lax.cond(go, stepped, lambda c: (c, skipped), carry)

        return jax.lax.scan(body, carry, (xs, lane_xs))

    def run(carry, consts, shared, xs, lane_xs):
        if len(carry.tracker.alive) > 1:
            return run_steps(step_lanes, carry, consts, shared, xs, lane_xs)
        # One lane (a serial lane, or a device's share): its axis is dropped outside
        # the loop, not in every step, where XLA:CPU ran the step ~40% slower on two
        # threads instead of one (docs/benchmarks.md).
        carry, consts = jax.tree.map(lambda a: a[0], (carry, consts))
        lane_xs = jax.tree.map(lambda a: a[:, 0], lane_xs)
        carry, outputs = run_steps(step_one, carry, consts, shared, xs, lane_xs)
        return jax.tree.map(lambda a: a[None], carry), jax.tree.map(lambda a: a[:, None], outputs)

    return run
