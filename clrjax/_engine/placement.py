"""Placement: how the lanes share the machine.

* ``"vmap"``: all lanes step together as one batched step;
* ``"serial"``: the lanes (or groups of ``group`` lanes) run one after another
  through a whole chunk of steps, one call of the program each (the lane loop
  is the driver's, in Python): the program is compiled for one lane's
  unbatched step, as a loop of single runs would be, and a lane's working set
  stays in the CPU caches (a large model's lanes no longer fit there together);
* ``"map"``: every step maps over groups of ``group`` lanes (``lax.map``
  *inside* the step), so only a group's temporaries live at once: the lanes
  fit a memory budget, with any step driver.

Independently, the lanes can run on a device mesh with the axes ``"lanes"``
and ``"data"`` (:func:`lane_mesh`, :func:`check_mesh`; devices of one process
or of many, after ``jax.distributed.initialize``): the lane axis is split over
``"lanes"`` and every device group runs its share of the lanes with the
placement above, as one device would (:func:`over_mesh`, a ``shard_map``);
each lane's batch is split over ``"data"`` (:class:`SplitBatch`: XLA's SPMD
partitioner then sums the partial gradients across it). The run's shared
constants are replicated; the per-step outputs are gathered onto every device
once per call, so every process reads all lanes. A lane count that does not
divide the ``"lanes"`` axis is padded with copies of the last lane, dropped
afterwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from clrjax._engine.task import Task

PLACEMENTS = ("vmap", "serial", "map")
LANES, DATA = "lanes", "data"  # the mesh's axes: lanes are split over one, each batch the other


class Placement(NamedTuple):
    """How the lanes are laid out.

    Attributes:
      kind: one of :data:`PLACEMENTS`.
      group: lanes per ``lax.map`` iteration (``"map"``) or per call of the
        program (``"serial"``); ``None``: one lane at a time.
      mesh: the device mesh (axes ``("lanes", "data")``), or ``None``: one device.
    """

    kind: str = "vmap"
    group: int | None = None
    mesh: Mesh | None = None

    @property
    def shards(self) -> int:
        """Device groups the lane axis is split over (1: not split)."""
        return 1 if self.mesh is None else self.mesh.shape[LANES]

    @property
    def data(self) -> int:
        """Devices each lane's batch is split over (1: not split)."""
        return 1 if self.mesh is None else self.mesh.shape[DATA]

    @property
    def batch_size(self) -> int | None:
        """``lax.map``'s ``batch_size`` for the groups (``None``: one lane at a time)."""
        return self.group if self.group is not None and self.group > 1 else None

    def describe(self) -> str:
        """E.g. ``"vmap"``, ``"map[4]"``, ``"serial[2]+sharded[8]"``, ``"vmap+data[4]"``."""
        label = self.kind
        if self.kind != "vmap" and self.group is not None and self.group > 1:
            label += f"[{self.group}]"
        if self.shards > 1:
            label += f"+sharded[{self.shards}]"
        if self.data > 1:
            label += f"+data[{self.data}]"
        return label


def map_lanes(placement: Placement, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Maps ``fn(lane_tree, shared)`` over the leading lane axis of ``lane_tree``.

    ``"vmap"`` (and ``"serial"``, whose program sees one group of lanes) batch
    the lanes; ``"map"`` runs ``lax.map`` over groups. A single lane is never
    batched: XLA:CPU runs a matmul with a batch dimension of 1 markedly slower.
    """

    def mapped(lane_tree: Any, shared: Any) -> Any:
        num_lanes = len(jax.tree.leaves(lane_tree)[0])
        if num_lanes == 1:
            out = fn(jax.tree.map(lambda a: a[0], lane_tree), shared)
            return jax.tree.map(lambda a: a[None], out)
        if placement.kind == "map":
            return jax.lax.map(lambda t: fn(t, shared), lane_tree, batch_size=placement.batch_size)
        return jax.vmap(fn, in_axes=(0, None))(lane_tree, shared)

    return mapped


def lane_mesh(devices: Sequence[Any]) -> Mesh:
    """A mesh that splits the lanes over ``devices`` (axes ``("lanes", "data")``, data 1)."""
    return _auto_mesh(np.array(list(devices)).reshape(-1, 1))


def _auto_mesh(devices: np.ndarray) -> Mesh:
    """A ``("lanes", "data")`` mesh whose axes XLA partitions automatically."""
    axis_type = getattr(jax.sharding, "AxisType", None)
    if axis_type is None:  # older JAX: every mesh axis is automatic
        return Mesh(devices, (LANES, DATA))
    return Mesh(devices, (LANES, DATA), axis_types=(axis_type.Auto,) * 2)


def check_mesh(mesh: Any) -> Mesh:
    """Validates the user's ``mesh``; returns it with the axes in the order ``("lanes", "data")``.

    Raises:
      TypeError: ``mesh`` is not a ``jax.sharding.Mesh``.
      ValueError: its axes are not exactly ``"lanes"`` and ``"data"``, its
        ``"data"`` axis splits batches on a JAX without ``jax.shard_map``, or a
        process has no device in it (that process could not read the result).
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh with the axes ('lanes', 'data'), got {mesh!r}"
        )
    names = tuple(mesh.axis_names)
    if sorted(names) != sorted((LANES, DATA)):
        raise ValueError(
            f"mesh must have exactly the axes ('lanes', 'data') (lanes are split over 'lanes', "
            f"each lane's batch over 'data'; use size 1 for an axis you do not split), got the "
            f"axes {names}: e.g. jax.make_mesh((4, 2), ('lanes', 'data')), or rename with "
            "jax.sharding.Mesh(mesh.devices, ('lanes', 'data'))"
        )
    devices = np.transpose(mesh.devices, [names.index(LANES), names.index(DATA)])
    if devices.shape[1] > 1 and not hasattr(jax, "shard_map"):
        # jax.experimental.shard_map cannot leave "data" to XLA with PRNG keys in the lanes
        raise ValueError(
            f"a mesh whose 'data' axis has {devices.shape[1]} devices needs jax >= 0.7 "
            f"(jax.shard_map); this is jax {jax.__version__}: upgrade, or split only the lanes"
        )
    processes = {d.process_index for d in devices.flat}
    if len(processes) != jax.process_count():
        missing = sorted(set(range(jax.process_count())) - processes)
        raise ValueError(
            f"mesh must include devices of every process, so that each reads the result; "
            f"processes {missing} have none in it"
        )
    return _auto_mesh(devices)


def place(tree: Any, mesh: Mesh, spec: PartitionSpec) -> Any:
    """Places ``tree`` on ``mesh`` with ``spec`` (e.g. ``P("lanes")``, or ``P()``: replicated).

    With several processes every process passes the same values; each places
    the shards of its own devices (no value crosses processes). A leaf that is
    already a global array (over other processes' devices too, e.g. from
    ``jax.make_array_from_process_local_data``) is resharded by XLA.
    """
    sharding = NamedSharding(mesh, spec)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(a: Any) -> Any:
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return jax.device_put(a, sharding)
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(a))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def over_mesh(
    init: Callable[..., Any], run: Callable[..., Any], mesh: Mesh
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The program's ``init`` and ``run`` with the lanes split over ``mesh``'s ``"lanes"`` axis.

    Each device group runs the unchanged functions on its own lanes (a
    ``shard_map`` that is manual over ``"lanes"`` only: the ``"data"`` axis
    stays with XLA's partitioner); the shared arguments are replicated. The
    per-step outputs ``(steps, lanes)`` are gathered over ``"lanes"`` (one
    ``all_gather`` per call), so every device and process holds all of them.
    """
    lanes, shared = PartitionSpec(LANES), PartitionSpec()
    by_step = PartitionSpec(None, LANES)

    def run_gathered(carry, consts, run_consts, xs, lane_xs):
        carry, outputs = run(carry, consts, run_consts, xs, lane_xs)
        return carry, jax.lax.all_gather(outputs, LANES, axis=1, tiled=True)

    init_specs = (shared, shared, lanes, lanes, shared, lanes)
    run_specs = (lanes, lanes, shared, shared, by_step)
    return (
        _shard_map(init, mesh, init_specs, (lanes, lanes)),
        _shard_map(run_gathered, mesh, run_specs, (lanes, shared)),
    )


def _shard_map(fn: Callable[..., Any], mesh: Mesh, in_specs: tuple, out_specs: tuple):
    """``shard_map`` manual over ``"lanes"`` only (replication of outputs is not checked)."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(
            fn,
            mesh=mesh,
            in_specs=in_specs,
            out_specs=out_specs,
            axis_names={LANES},
            check_vma=False,
        )
    from jax.experimental.shard_map import shard_map  # older JAX

    return shard_map(fn, mesh, in_specs, out_specs, check_rep=False, auto=frozenset({DATA}))


@dataclasses.dataclass(frozen=True)
class SplitBatch:
    """A task whose batches are split over the mesh's ``"data"`` axis.

    The training batch's example axis (``batch_axis``: 1 behind a micro-batch
    axis) and, when it divides, a validation batch's are constrained to
    ``"data"``; XLA's SPMD partitioner then splits the step's work over it and
    sums the partial gradients and losses (an all-reduce). The result is the
    unsplit step's up to float32 summation order.

    Attributes:
      task: the :class:`~clrjax._engine.task.Task` of one lane.
      mesh: the mesh (axes ``("lanes", "data")``).
      batch_axis: the training batch's example axis.
    """

    task: Task
    mesh: Mesh
    batch_axis: int = 0

    def _split(self, batch: Any, axis: int) -> Any:
        def constrain(a: Any) -> Any:
            if np.ndim(a) <= axis or np.shape(a)[axis] % self.mesh.shape[DATA]:
                return a
            spec = PartitionSpec(*(None,) * axis, DATA)
            return jax.lax.with_sharding_constraint(a, NamedSharding(self.mesh, spec))

        return jax.tree.map(constrain, batch)

    def init(self, start: Any, hparams: Mapping[str, jax.Array], key: jax.Array) -> Any:
        return self.task.init(start, hparams, key)

    def step(
        self, state: Any, batch: Any, hparams: Mapping[str, jax.Array], key: jax.Array
    ) -> tuple[Any, jax.Array]:
        return self.task.step(state, self._split(batch, self.batch_axis), hparams, key)

    def evaluate(self, state: Any, batch: Any, key: jax.Array) -> Any:
        return self.task.evaluate(state, self._split(batch, 0), key)


def padded_lanes(num_lanes: int, shards: int) -> int:
    """The lane count rounded up to a multiple of ``shards``."""
    return -(-num_lanes // shards) * shards


def pad_lanes(tree: Any, num_lanes: int, padded: int, axis: int = 0) -> Any:
    """Pads the lane axis of every leaf to ``padded`` with copies of the last lane."""
    if padded == num_lanes:
        return tree

    def pad(a: Any) -> Any:
        last = np.take(np.asarray(a), [num_lanes - 1], axis=axis)
        return np.concatenate([a, np.repeat(last, padded - num_lanes, axis=axis)], axis=axis)

    return jax.tree.map(pad, tree)
