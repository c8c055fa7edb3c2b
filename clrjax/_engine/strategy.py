"""The rules that choose a placement and a step driver, from one traced step.

:func:`footprint` traces one lane's step (no compilation) and measures what it
holds and computes; :func:`choose_driver`, :func:`choose_placement` and
:func:`choose_threads` apply rules measured in
``benchmarks/bench_range_test.py`` (figures in ``docs/benchmarks.md``):

* **driver**: on CPU, steps with convolutions run one loop-free step per call
  (``"python"``; XLA:CPU runs convolutions inside loops ~10x slower,
  jax-ml/jax#12868); a progress bar, an explicit ``chunk_size`` or a stream of
  batches (read chunk by chunk) take ``"chunks"``; so does a run whose calls
  would each take more than about a second (estimated from the step's FLOPs),
  so that Ctrl-C, answered between calls, acts within about a second;
  otherwise the whole run is one ``"scan"`` (per lane group under ``"serial"``:
  16 lanes of a 512-wide MLP's range test take ~7 s, one lane's ~0.5 s).
* **placement**: lanes that do not fit the memory budget step in groups
  (``"serial"`` groups when the rules below pick ``"serial"``, else ``"map"``);
  on CPU ``"serial"`` when the lanes' state outgrows the caches or a lane's
  step is large enough that batching lanes gains nothing (separate matmuls run
  at the machine's full rate); on accelerators ``"serial"`` for convolutions
  (``vmap`` turns them into grouped convolutions); otherwise ``"vmap"``, which
  on CPU with several cores (and a loop driver) becomes one vmapped
  ``"serial"`` group per core.
* **threads**: on CPU with one device, ``"serial"`` groups step on as many host
  threads at once as the process may use cores (within the memory budget):
  XLA:CPU runs a call on the thread that makes it, a small lane's step leaves
  the other cores idle, and even a 512-wide MLP's matmuls do not keep two cores
  busy (docs/benchmarks.md).
* **devices**: with several devices the lanes are split over all of them (a mesh
  given by the caller splits them over its ``"lanes"`` axis, each batch over ``"data"``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from clrjax._engine.placement import Placement

# CPU: "serial" once all lanes' state exceeds this (beyond the caches): 512-wide
# MLP, 16 lanes (38 MB): 1.50 s serial vs 2.08 s vmap; 4 lanes (10 MB): equal.
SERIAL_STATE_BYTES = 16 << 20
# CPU: "serial" once one lane's step computes this many FLOPs: batched matmuls
# then gain nothing over separate ones (see docs/benchmarks.md).
SERIAL_STEP_FLOPS = 2e6
# "chunks" once one call of a whole-run scan is estimated to take longer than this
# at the rate below, so that Ctrl-C (answered between calls) acts within about a
# second. Scanning a 512-wide MLP's serial lanes instead of chunking them ran 2-4%
# faster (docs/benchmarks.md).
SCAN_MAX_SECONDS = 1.0
CPU_FLOPS_PER_SECOND = 50e9
ACCELERATOR_FLOPS_PER_SECOND = 10e12


class Footprint(NamedTuple):
    """What one lane's step holds and computes (from its jaxpr; no compilation).

    Attributes:
      state_bytes: one lane's carried state (train state and tracker).
      step_bytes: every value one lane's step computes (an upper bound of its
        temporaries: XLA frees and fuses many of them).
      shared_bytes: the run's shared constants (dataset, validation batches).
      flops: multiply-add FLOPs (x2) of the matmuls and convolutions of a step.
      convolutions: the step contains a convolution.
    """

    state_bytes: int
    step_bytes: int
    shared_bytes: int
    flops: float
    convolutions: bool

    def total(self, num_lanes: int, lanes_at_once: int) -> int:
        """Estimated peak bytes when ``lanes_at_once`` of ``num_lanes`` lanes step together."""
        return int(
            2 * self.state_bytes * num_lanes + self.shared_bytes + self.step_bytes * lanes_at_once
        )


def tree_bytes(tree: Any) -> int:
    """Bytes of the leaves of ``tree`` (arrays or ``jax.ShapeDtypeStruct``; keys not counted)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        dtype = getattr(leaf, "dtype", np.dtype(np.float32))
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            continue
        total += math.prod(np.shape(leaf)) * np.dtype(dtype).itemsize
    return total


def _equations(jaxpr: Any):
    """Every equation of ``jaxpr`` and of the jaxprs nested in it."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    yield from _equations(sub)


def _flops(eqn: Any) -> float:
    if eqn.primitive.name == "dot_general":
        (contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        out = eqn.outvars[0].aval.shape
        return 2.0 * math.prod(out) * math.prod(lhs[d] for d in contract)
    if eqn.primitive.name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        out = eqn.outvars[0].aval.shape
        spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, spatial...)
        per_output = math.prod(rhs[d] for d in spec[1:])
        return 2.0 * math.prod(out) * per_output
    return 0.0


def footprint(lane_step: Any, state: Any, consts: Any, shared: Any, x: Any, lane_x: Any):
    """Traces ``lane_step`` for one lane and returns its :class:`Footprint`.

    ``state`` may hold ``jax.ShapeDtypeStruct`` leaves; the other arguments are
    one lane's (or one step's) values.
    """
    jaxpr = jax.make_jaxpr(lane_step)(state, consts, shared, x, lane_x)
    eqns = list(_equations(jaxpr.jaxpr))
    return Footprint(
        state_bytes=tree_bytes(state),
        step_bytes=sum(tree_bytes([v.aval for v in e.outvars]) for e in eqns),
        shared_bytes=tree_bytes((shared.data, shared.val)),
        flops=sum(map(_flops, eqns)),
        convolutions=any(e.primitive.name == "conv_general_dilated" for e in eqns),
    )


def memory_budget(max_memory: float | None, devices: Sequence[Any]) -> float:
    """Bytes the lanes may use on each of ``devices``: ``max_memory``, else what they have free.

    Only this process's devices among ``devices`` are asked (another process's
    cannot be). Accelerators: 90% of the least free memory among them; CPU
    devices, which share the host's RAM: half the available RAM
    (:func:`host_memory_budget`) divided among them.
    """
    if max_memory is not None:
        return float(max_memory)
    own = [d for d in devices if d.process_index == jax.process_index()]
    stats = [d.memory_stats() for d in own]
    if stats and all(s and "bytes_limit" in s for s in stats):
        return 0.9 * min(s["bytes_limit"] - s.get("bytes_in_use", 0) for s in stats)
    return host_memory_budget() / max(1, len(own))


def host_memory_budget() -> float:
    """Half the available RAM (``MemAvailable``); unknown: no limit."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return 0.5 * int(line.split()[1]) * 1024
    except OSError:
        pass
    return math.inf


def _size(num_bytes: float) -> str:
    """E.g. ``"1.5 GiB"``, ``"12 KiB"``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.3g} {unit}"
    return f"{num_bytes:.0f} bytes"


def lanes_that_fit(fp: Footprint, num_lanes: int, budget: float) -> int:
    """The most lanes (0 .. ``num_lanes``) that may step together within ``budget``."""
    fits = [b for b in range(1, num_lanes + 1) if fp.total(num_lanes, b) <= budget]
    return max(fits, default=0)


class Choice(NamedTuple):
    """A concrete strategy: the :class:`Placement`, the driver and its chunk size.

    Attributes:
      placement: the :class:`Placement`.
      driver: the step driver.
      chunk_size: steps per call of the program.
      threads: host threads stepping ``"serial"`` groups at once (1: one after another).
    """

    placement: Placement
    driver: str
    chunk_size: int
    threads: int = 1

    def describe(self) -> str:
        """E.g. ``"vmap/scan"``, ``"map[4]/chunks"``, ``"serial+threads[2]/scan"``."""
        threads = f"+threads[{self.threads}]" if self.threads > 1 else ""
        return f"{self.placement.describe()}{threads}/{self.driver}"


def choose_driver(
    driver: str, fp: Footprint | None, *, on_cpu: bool, wants_chunks: bool, call_work: float
) -> str:
    """The step driver (rules in the module docstring).

    ``call_work`` is the FLOPs of the longest call a whole-run ``"scan"`` would
    make: every step of the lanes one call runs (all of a device's lanes, or one
    ``"serial"`` group).
    """
    if driver != "auto":
        return driver
    if fp is not None and on_cpu and fp.convolutions:
        return "python"
    rate = CPU_FLOPS_PER_SECOND if on_cpu else ACCELERATOR_FLOPS_PER_SECOND
    if wants_chunks or call_work / rate > SCAN_MAX_SECONDS:
        return "chunks"
    return "scan"


def choose_placement(
    kind: str,
    group: int | None,
    fp: Footprint | None,
    *,
    lanes_per_device: int,
    budget: float,
    on_cpu: bool,
    driver: str,
    threads: int = 1,
) -> Placement:
    """The lanes' placement on one device (rules in the module docstring).

    ``fp`` may be ``None`` only with an explicit ``kind`` (then no rule is applied,
    and no memory check: the caller chose). ``threads`` is :func:`host_threads`
    on CPU with one device, else 1.
    """
    if kind not in ("auto", "timed") or fp is None:
        return Placement(kind, None if kind == "vmap" else group)
    loops = driver != "python"
    if on_cpu:
        big = (
            fp.state_bytes * lanes_per_device >= SERIAL_STATE_BYTES or fp.flops >= SERIAL_STEP_FLOPS
        )
    else:
        big = fp.convolutions
    serial = loops and lanes_per_device > 1 and big
    if group is not None:
        return Placement("serial" if serial else "map", group)
    fit = lanes_that_fit(fp, lanes_per_device, budget)
    if fit == 0:
        need = fp.total(lanes_per_device, 1)
        raise MemoryError(
            f"the run needs about {_size(need)} per device with one lane stepping at a "
            f"time, more than the budget of {_size(budget)} (max_memory); use fewer lanes, a "
            "smaller batch_size, or raise max_memory"
        )
    if serial:  # one lane at a time: the least memory
        return Placement("serial")
    if fit < lanes_per_device:
        return Placement("map", fit)
    if loops and threads > 1 and lanes_per_device > 1:  # one vmapped group per host thread
        return Placement("serial", -(-lanes_per_device // min(threads, lanes_per_device)))
    return Placement("vmap")


def host_threads() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_threads(
    placement: Placement,
    fp: Footprint | None,
    *,
    lanes_per_device: int,
    budget: float,
    available: int,
) -> int:
    """Host threads that step ``"serial"`` groups at once (rule in the module docstring).

    ``available`` is :func:`host_threads` on CPU with one device, else 1 (a
    call on several devices is already spread over them). With a
    :class:`Footprint`, as many as keep the groups stepping at once within ``budget``.
    """
    if placement.kind != "serial":
        return 1
    group = placement.group or 1
    threads = max(1, min(available, -(-lanes_per_device // group)))
    if fp is not None:
        while threads > 1 and fp.total(lanes_per_device, threads * group) > budget:
            threads -= 1
    return threads
