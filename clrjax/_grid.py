"""The lanes of a hyperparameter grid: grid x seeds, in row-major order, and their keys."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clrjax import _numerics as num

SEED_NAME = "seed"
_SEED_LIMIT = 2**32  # seeds are folded into keys as uint32 (as jax.random.fold_in)


@dataclasses.dataclass(frozen=True)
class LaneGrid:
    """The lanes of a grid.

    Attributes:
      hparams: per-lane values, ``name -> (lanes,)`` arrays, in grid order;
        includes ``"seed"`` when seeds were given.
      grid_names: the grid's axis names in order (``"seed"`` last if given).
      optimizer_names: the names that are optimizer hyperparameters.
    """

    hparams: dict[str, np.ndarray]
    grid_names: tuple[str, ...]
    optimizer_names: tuple[str, ...]

    @property
    def num_lanes(self) -> int:
        if not self.hparams:
            return 1
        return len(next(iter(self.hparams.values())))

    @property
    def seeds(self) -> np.ndarray | None:
        return self.hparams.get(SEED_NAME)

    def optimizer_hparams(self) -> dict[str, np.ndarray]:
        """The optimizer hyperparameters, as float arrays of shape ``(lanes,)``."""
        dtype = num.float_dtype()
        return {k: self.hparams[k].astype(dtype) for k in self.optimizer_names}


def check_seeds(seeds: Sequence[int]) -> np.ndarray:
    """``seeds`` as an int64 array; raises unless they are distinct-able ints in [0, 2**32)."""
    values = np.atleast_1d(np.asarray(seeds))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"seeds must be a non-empty 1-D sequence of ints, got {seeds!r}")
    if not np.issubdtype(values.dtype, np.integer) or values.dtype == bool:
        raise TypeError(f"seeds must be integers, got {seeds!r}")
    bad = [int(s) for s in values if not 0 <= int(s) < _SEED_LIMIT]
    if bad:
        raise ValueError(
            f"seeds must be in [0, 2**32) (they are folded into PRNG keys as uint32), got {bad}"
        )
    return values.astype(np.int64)


def expand_grid(grid: Mapping[str, Sequence[Any]] | None, seeds: Sequence[int] | None) -> LaneGrid:
    """Expands a grid (and seeds) into lanes, in row-major order of the dict.

    Args:
      grid: ``{name: values}``; lane ``i`` takes the ``i``-th element of
        ``itertools.product(*grid.values())``.
      seeds: optional integer seeds, added as the last (fastest) grid axis
        named ``"seed"``.

    Returns:
      The :class:`LaneGrid`.

    Examples:
      >>> lanes = expand_grid({"weight_decay": [1e-3, 0.0], "momentum": [0.9, 0.95]}, None)
      >>> print(lanes.num_lanes, lanes.hparams["momentum"].tolist())
      4 [0.9, 0.95, 0.9, 0.95]
    """
    grid = {} if grid is None else grid
    if not isinstance(grid, Mapping):
        raise TypeError(f"grid must be a dict of name -> values, got {grid!r}")
    axes: dict[str, np.ndarray] = {}
    for name, values in grid.items():
        if not isinstance(name, str):
            raise TypeError(f"grid names must be strings, got {name!r}")
        if name == SEED_NAME:
            raise ValueError(f"grid name {SEED_NAME!r} is reserved; pass seeds=... instead")
        if name == "learning_rate":
            raise ValueError(
                "grid: 'learning_rate' cannot be a grid axis; the learning rate is what the "
                "range test ramps (set start_lr, end_lr and ramp)"
            )
        values = np.atleast_1d(np.asarray(values))
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"grid[{name!r}] must be a non-empty 1-D sequence, got {values!r}")
        num.check_float(f"grid[{name!r}]", values)
        axes[name] = values.astype(np.float64)
    optimizer_names = tuple(axes)
    if seeds is not None:
        axes[SEED_NAME] = check_seeds(seeds)
    if not axes:
        return LaneGrid({}, (), ())
    rows = list(itertools.product(*(range(len(v)) for v in axes.values())))
    hparams = {
        name: values[[row[j] for row in rows]] for j, (name, values) in enumerate(axes.items())
    }
    return LaneGrid(hparams, tuple(axes), optimizer_names)


def as_key(key: Any) -> jax.Array:
    """Accepts a typed key, a legacy uint32 key, an int seed in [0, 2**32) or None (seed 0)."""
    if key is None:
        return _seed_key(0, jax.config.jax_enable_x64)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if not 0 <= int(key) < 2**63:
            raise ValueError(f"key must be a non-negative int seed below 2**63, got {key!r}")
        return _seed_key(int(key), jax.config.jax_enable_x64)
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a jax.random.key, an int seed or None, got {key!r}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key, got shape {key.shape}")
        return key
    if key.shape == (2,) and key.dtype == jnp.uint32:
        return jax.random.wrap_key_data(key)
    raise TypeError(f"key must be a jax.random.key, an int seed or None, got {key!r}")


@functools.lru_cache(maxsize=16)
def _seed_key(seed: int, x64: bool) -> jax.Array:
    """``jax.random.key(seed)`` (immutable: safe to share between calls).

    For the default threefry keys its bits are set directly: ``jax.random.key``
    compiles a seeding program, 50 ms of a cold first call. Without x64 JAX
    keeps the seed's low 32 bits.
    """
    if jax.config.jax_default_prng_impl != "threefry2x32":
        return jax.random.key(seed)
    high = seed >> 32 if x64 else 0
    return jax.random.wrap_key_data(np.array([high, seed & 0xFFFFFFFF], np.uint32))
