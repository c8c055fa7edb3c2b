"""Placement: how the lanes share the machine.

* ``"vmap"``: all lanes step together as one batched step;
* ``"serial"``: the lanes (or groups of ``group`` lanes) run one after another
  through a whole chunk of steps (``lax.map`` *outside* the steps): one
  compiled copy of the unbatched step, and a lane's working set stays in the
  CPU caches (a large model's lanes no longer fit there together);
* ``"map"``: every step maps over groups of ``group`` lanes (``lax.map``
  *inside* the step), so only a group's temporaries live at once: the lanes
  fit a memory budget, with any step driver.

Independently, the lane axis can be split over several devices
(:func:`shard`): each device runs its share of the lanes with the placement
above; the run's shared constants are replicated. A lane count that does not
divide evenly is padded with copies of the last lane, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

PLACEMENTS = ("vmap", "serial", "map")


class Placement(NamedTuple):
    """How the lanes are laid out.

    Attributes:
      kind: one of :data:`PLACEMENTS`.
      group: lanes per ``lax.map`` iteration (``"map"``, ``"serial"``; ``None``:
        one lane at a time).
      shards: devices the lane axis is split over (1: not split).
    """

    kind: str = "vmap"
    group: int | None = None
    shards: int = 1

    @property
    def batch_size(self) -> int | None:
        """``lax.map``'s ``batch_size`` for the groups (``None``: one lane at a time)."""
        return self.group if self.group is not None and self.group > 1 else None

    def describe(self) -> str:
        """E.g. ``"vmap"``, ``"map[4]"``, ``"serial[2]+sharded[8]"``."""
        label = self.kind
        if self.kind != "vmap" and self.group is not None and self.group > 1:
            label += f"[{self.group}]"
        if self.shards > 1:
            label += f"+sharded[{self.shards}]"
        return label


def map_lanes(placement: Placement, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Maps ``fn(lane_tree, shared)`` over the leading lane axis of ``lane_tree``.

    ``"vmap"`` (and ``"serial"``, whose lane loop lives outside the steps) batch
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


def lane_mesh(devices: Sequence[Any]) -> jax.sharding.Mesh:
    """A 1-D device mesh with the axis ``"lanes"``."""
    return jax.sharding.Mesh(np.array(list(devices)), ("lanes",))


def shard(tree: Any, mesh: jax.sharding.Mesh, lanes: bool) -> Any:
    """Places ``tree`` on ``mesh``: the leading axis split over ``"lanes"``, or replicated."""
    spec = jax.sharding.PartitionSpec("lanes") if lanes else jax.sharding.PartitionSpec()
    return jax.device_put(tree, jax.sharding.NamedSharding(mesh, spec))


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
