"""Range test, stage 1: validate the inputs and build the lanes.

A *lane* is one candidate training run of the range test: one point of the
hyperparameter grid (times one seed). This module turns the user's arguments
into plain NumPy arrays that the driver (stage 2) consumes as traced data:

* :func:`expand_grid` expands ``grid`` (and ``seeds``) into per-lane arrays in
  row-major (``itertools.product``) order of the dict;
* :func:`lr_ramp` computes the learning rate of every step (shared by all lanes);
* :func:`plan_batches` / :func:`batch_indices` decide where every
  micro-batch comes from (indices into on-device arrays, or a
  :class:`BatchStream` of ready batches), :class:`StepInputs` feeds them to the
  driver chunk by chunk;
* :func:`lane_placement` places the lanes (one device, or the lane axis
  sharded over devices);
* :func:`pytorch_sgd` is the default optimizer factory.

Nothing here is jitted; everything runs once per call on the host.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clrjax import _numerics as num

RAMPS = ("exp", "linear")
LR_GRIDS = ("torch", "fastai")
SEED_NAME = "seed"


def pytorch_sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: jax.typing.ArrayLike = 0.0,
) -> optax.GradientTransformation:
    r"""SGD with momentum and coupled L2 weight decay, as ``torch.optim.SGD``.

    With gradient :math:`g_t`, parameters :math:`p_t`, momentum :math:`\mu`,
    weight decay :math:`\lambda` and learning rate :math:`\eta_t`:

    .. math::

      d_t = g_t + \lambda p_t, \quad b_t = \mu b_{t-1} + d_t \ (b_0 = d_0),
      \quad p_{t+1} = p_t - \eta_t b_t.

    Every argument may be a traced array, so a range test can sweep
    ``momentum`` and ``weight_decay`` as lanes of one compiled program.

    Args:
      learning_rate: the learning rate :math:`\eta`.
      momentum: the momentum :math:`\mu` (0 gives plain SGD).
      weight_decay: the coupled L2 coefficient :math:`\lambda`.

    Returns:
      An ``optax.GradientTransformation``.

    Examples:
      >>> import jax.numpy as jnp
      >>> tx = pytorch_sgd(0.1, momentum=0.9, weight_decay=0.5)
      >>> p = jnp.array(2.0)
      >>> u, state = tx.update(jnp.array(1.0), tx.init(p), p)
      >>> print(float(u))  # -0.1 * (1.0 + 0.5 * 2.0)
      -0.2
    """
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum),
        optax.scale_by_learning_rate(learning_rate),
    )


@dataclasses.dataclass(frozen=True)
class Lanes:
    """The lanes of a range test.

    Attributes:
      hparams: per-lane values, ``name -> (lanes,)`` arrays, in grid order;
        includes ``"seed"`` when seeds were given.
      grid_names: the grid's axis names in order (``"seed"`` last if given).
      optimizer_names: the names passed to the optimizer factory.
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


def expand_grid(grid: Mapping[str, Sequence[Any]] | None, seeds: Sequence[int] | None) -> Lanes:
    """Expands a grid (and seeds) into lanes, in row-major order of the dict.

    Args:
      grid: ``{name: values}``; lane ``i`` takes the ``i``-th element of
        ``itertools.product(*grid.values())``.
      seeds: optional integer seeds, added as the last (fastest) grid axis
        named ``"seed"``.

    Returns:
      The :class:`Lanes`.

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
        values = np.atleast_1d(np.asarray(values))
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"grid[{name!r}] must be a non-empty 1-D sequence, got {values!r}")
        num.check_number(f"grid[{name!r}]", values)
        axes[name] = values.astype(np.float64)
    optimizer_names = tuple(axes)
    if seeds is not None:
        seed_values = np.atleast_1d(np.asarray(seeds))
        if seed_values.ndim != 1 or seed_values.size == 0:
            raise ValueError(f"seeds must be a non-empty 1-D sequence of ints, got {seeds!r}")
        if not np.issubdtype(seed_values.dtype, np.integer):
            raise TypeError(f"seeds must be integers, got {seeds!r}")
        axes[SEED_NAME] = seed_values.astype(np.int64)
    if not axes:
        return Lanes({}, (), ())
    rows = list(itertools.product(*(range(len(v)) for v in axes.values())))
    hparams = {
        name: values[[row[j] for row in rows]] for j, (name, values) in enumerate(axes.items())
    }
    return Lanes(hparams, tuple(axes), optimizer_names)


def check_trainable(name: str, params: Any) -> None:
    """Raises ``TypeError`` unless every leaf of ``params`` is a floating array."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)} has dtype {dtype}; every parameter must be "
                "floating. Pass non-trainable leaves (integer counters, PRNG keys, e.g. nnx "
                "RngState) through state=..., e.g. nnx.split(model, nnx.Param, ...)"
            )


def check_optimizer_accepts(optimizer: Callable[..., Any], names: Iterable[str]) -> None:
    """Raises ``ValueError`` if ``optimizer(learning_rate=..., **{name: ...})`` is impossible."""
    if not callable(optimizer):
        raise TypeError(f"optimizer must be a factory(learning_rate, **hparams), got {optimizer!r}")
    try:
        params = inspect.signature(optimizer).parameters
    except (TypeError, ValueError):  # builtins without a signature: trust the caller
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    if "learning_rate" in names:
        raise ValueError(
            "grid: 'learning_rate' cannot be a grid axis; the learning rate is the range "
            "test's ramp (set start_lr, end_lr and ramp)"
        )
    for name in names:
        if isinstance(params.get(name, None), inspect.Parameter) and isinstance(
            params[name].default, bool
        ):
            raise ValueError(
                f"grid: {name!r} is a flag of the optimizer factory (default "
                f"{params[name].default!r}), not a number; fix it in the factory instead, e.g. "
                f"optimizer=functools.partial(factory, {name}=...)"
            )
    for name in ("learning_rate", *names):
        if name not in accepted:
            what = "optimizer" if name == "learning_rate" else "grid"
            raise ValueError(
                f"{what}: the optimizer factory {getattr(optimizer, '__name__', optimizer)!r} "
                f"has no argument {name!r} (it accepts {sorted(accepted)})"
            )


def lr_ramp(
    start_lr: float, end_lr: float, num_steps: int, ramp: str = "exp", lr_grid: str = "torch"
) -> np.ndarray:
    r"""Learning rate of each step of the range test.

    With :math:`N` steps and position :math:`r_i` (``lr_grid="torch"``:
    :math:`r_i = i / (N - 1)`, so the last step uses ``end_lr``;
    ``lr_grid="fastai"``: :math:`r_i = i / N`, so ``end_lr`` is never reached):

    * ``ramp="exp"``: :math:`\eta_i = \eta_0 (\eta_{end} / \eta_0)^{r_i}`;
    * ``ramp="linear"``: :math:`\eta_i = \eta_0 + r_i (\eta_{end} - \eta_0)`.

    Examples:
      >>> print(lr_ramp(1e-3, 1.0, 4).round(6).tolist())
      [0.001, 0.01, 0.1, 1.0]
      >>> print(lr_ramp(0.0625, 1.0, 4, ramp="exp", lr_grid="fastai").tolist())
      [0.0625, 0.125, 0.25, 0.5]
    """
    num.check_choice("ramp", ramp, RAMPS)
    num.check_choice("lr_grid", lr_grid, LR_GRIDS)
    check_lr_range(start_lr, end_lr)
    num.check_count("num_steps", num_steps, minimum=2)
    start_lr, end_lr = float(start_lr), float(end_lr)
    denominator = num_steps - 1 if lr_grid == "torch" else num_steps
    r = np.arange(num_steps, dtype=np.float64) / denominator
    if ramp == "exp":
        lrs = start_lr * (end_lr / start_lr) ** r
    else:
        lrs = start_lr + r * (end_lr - start_lr)
    lrs[0] = start_lr
    if lr_grid == "torch":
        lrs[-1] = end_lr  # exact, where the power can land one ulp off
    return lrs


def check_lr_range(start_lr: Any, end_lr: Any) -> None:
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if np.ndim(value) != 0:
            raise TypeError(f"{name} must be a scalar, got {value!r}")
        num.check_positive(name, value)
    if not float(start_lr) < float(end_lr):
        raise ValueError(f"start_lr must be < end_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}")


@dataclasses.dataclass(frozen=True)
class LanePlacement:
    """Shards the lane axis over devices (``lanes``) or replicates (``replicated``)."""

    lane_sharding: jax.sharding.Sharding
    replicated_sharding: jax.sharding.Sharding

    def lanes(self, tree: Any) -> Any:
        return jax.device_put(tree, self.lane_sharding)

    def replicated(self, tree: Any) -> Any:
        return jax.device_put(tree, self.replicated_sharding)


def lane_placement(num_lanes: int, devices: Sequence[Any] | None = None) -> LanePlacement:
    """A 1-D device mesh ``("lanes",)`` over ``devices`` (default: all)."""
    devices = list(jax.devices() if devices is None else devices)
    if num_lanes % len(devices):
        raise ValueError(
            f"shard_lanes: the number of lanes ({num_lanes}) must be a multiple of the "
            f"number of devices ({len(devices)})"
        )
    mesh = jax.sharding.Mesh(np.array(devices), ("lanes",))
    return LanePlacement(
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("lanes")),
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
    )


# ----------------------------------------------------------------------------- data


def is_batch_stream(data: Any, name: str = "data") -> bool:
    """True when ``data`` is an iterable of batches rather than a pytree of arrays.

    Lists, iterators, generators and iterable objects that are not pytree
    containers (e.g. a ``torch.utils.data.DataLoader``) are streams of
    batches; arrays, tuples, dicts and other pytrees are whole datasets.
    """
    if (
        isinstance(data, list)
        and all(hasattr(b, "shape") for b in data)
        and len({np.shape(b) for b in data}) > 1
    ):
        # A list is a stream of batches, and batches of one array must share a shape.
        raise TypeError(
            f"{name}: a list of arrays of different shapes is not a stream of batches; "
            "pass a tuple such as (x, y) for one dataset, or a list of batch tuples "
            "[(x0, y0), (x1, y1), ...]"
        )
    if isinstance(data, list | Iterator):
        return True
    if isinstance(data, (tuple, dict, np.ndarray, jax.Array)) or hasattr(data, "_fields"):
        return False
    leaves = jax.tree_util.tree_leaves(data)
    is_leaf = len(leaves) == 1 and leaves[0] is data
    return is_leaf and isinstance(data, Iterable) and not hasattr(data, "shape")


def example_count(data: Any, name: str = "data") -> int:
    """Number of examples in a pytree of arrays (the shared leading axis size)."""
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError(f"{name} must contain at least one array, got {data!r}")
    counts = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(data):
        if np.ndim(leaf) == 0:
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} must have a leading example axis, got a scalar"
            )
        counts.append((jax.tree_util.keystr(path), np.shape(leaf)[0]))
    sizes = {c for _, c in counts}
    if len(sizes) != 1:
        detail = ", ".join(f"{name}{p}: {c}" for p, c in counts)
        raise ValueError(f"all leaves of {name} must have the same number of examples; {detail}")
    return counts[0][1]


def batch_indices(
    num_examples: int, batch_size: int, num_batches: int, shuffle: bool, key: jax.Array
) -> np.ndarray:
    """Example indices of ``num_batches`` consecutive batches, epoch by epoch.

    Every epoch uses ``num_examples // batch_size`` full batches (the remainder
    of an epoch is dropped, as ``drop_last=True``); with ``shuffle`` epoch
    ``e`` is the permutation that sorts random bits drawn from ``fold_in(key, e)``.

    Returns:
      int32 array ``(num_batches, batch_size)``.

    Examples:
      >>> print(batch_indices(5, 2, 3, False, None).tolist())
      [[0, 1], [2, 3], [0, 1]]
    """
    per_epoch = num_examples // batch_size
    num_epochs = math.ceil(num_batches / per_epoch)
    if shuffle:  # one device call for all epochs; sorting on the host is ~50x faster
        bits = np.asarray(_epoch_bits(key, num_epochs, num_examples))
        perms = _stable_argsort(bits)
    else:
        perms = np.broadcast_to(np.arange(num_examples), (num_epochs, num_examples))
    epochs = perms[:, : per_epoch * batch_size].reshape(-1, batch_size)
    return epochs[:num_batches].astype(np.int32)


def _stable_argsort(bits: np.ndarray) -> np.ndarray:
    """``np.argsort(bits, axis=1, kind="stable")`` of uint32 rows, ~10x faster.

    Sorts the unique keys ``bits << 32 | position`` (NumPy's default sort of
    uint64 is vectorized; its stable sort of uint32 is not), so ties keep
    their order exactly as in a stable sort.
    """
    position = np.arange(bits.shape[1], dtype=np.uint64)
    keys = np.sort((bits.astype(np.uint64) << np.uint64(32)) | position, axis=1)
    return keys & np.uint64(0xFFFFFFFF)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _epoch_bits(key: jax.Array, num_epochs: int, num_examples: int) -> jax.Array:
    """``(num_epochs, num_examples)`` random uint32; row ``e`` drawn from ``fold_in(key, e)``."""
    keys = jax.vmap(lambda e: jax.random.fold_in(key, e))(jnp.arange(num_epochs))
    return jax.vmap(lambda k: jax.random.bits(k, (num_examples,)))(keys)


def split_keys(key: jax.Array, lanes: Lanes) -> tuple[jax.Array, jax.Array]:
    """``(data_key, lane_keys)`` from ``key`` in one device call.

    ``split(key)`` gives the data-order key and a lane key; lane ``i``'s key is
    ``fold_in(lane_key, seed_i)``, or the lane key itself without seeds.
    """
    seeds = None if lanes.seeds is None else np.asarray(lanes.seeds, np.uint32)
    return _split_keys(key, seeds, lanes.num_lanes)


@functools.partial(jax.jit, static_argnums=2)
def _split_keys(key, seeds, num_lanes):
    data_key, lane_key = jax.random.split(key)
    if seeds is None:
        return data_key, jnp.broadcast_to(lane_key, (num_lanes,))
    return data_key, jax.vmap(lambda s: jax.random.fold_in(lane_key, s))(seeds)


def as_key(key: Any) -> jax.Array:
    """Accepts a typed key, a legacy uint32 key, an int seed or None (seed 0)."""
    if key is None:
        return _seed_key(0)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return _seed_key(int(key))
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
def _seed_key(seed: int) -> jax.Array:
    return jax.random.key(seed)  # immutable: safe to share between calls


def validation_batches(val_data: Any, val_batch_size: int | None) -> Any:
    """Stacks validation data into ``(num_batches, batch, ...)`` arrays.

    ``val_data`` is a pytree of arrays (split into batches of
    ``val_batch_size``, default all of it; a smaller remainder is dropped) or
    a list of equally shaped batches.
    """
    if is_batch_stream(val_data, "val_data"):
        batches = [jax.tree.map(np.asarray, b) for b in val_data]
        if not batches:
            raise ValueError("val_data must contain at least one batch")
        try:
            return jax.tree.map(lambda *b: jnp.asarray(np.stack(b)), *batches)
        except ValueError as e:
            raise ValueError(f"val_data batches must share structure and shapes: {e}") from e
    n = example_count(val_data, "val_data")
    size = n if val_batch_size is None else val_batch_size
    num.check_count("val_batch_size", size)
    if size > n:
        raise ValueError(f"val_batch_size ({size}) is larger than val_data ({n} examples)")
    k = n // size
    return jax.tree.map(
        lambda a: jnp.asarray(a)[: k * size].reshape(k, size, *np.shape(a)[1:]), val_data
    )


class BatchStream:
    """Pulls ready-made batches from an iterable, restarting it when exhausted.

    Batches whose leading size differs from the first batch's (a short last
    batch of an epoch) are skipped.
    """

    def __init__(self, data: Any):
        self._data = data
        self._it = iter(data)
        self._size: int | None = None

    def _next(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self._data)
            if self._it is self._data:  # a one-shot iterator: nothing to restart
                raise ValueError(
                    "data ran out of batches; pass a re-iterable (list, DataLoader) or more batches"
                ) from None
        try:
            return next(self._it)
        except StopIteration:
            raise ValueError("data yields no batches") from None

    def take(self, n: int) -> Any:
        """The next ``n`` batches stacked on a new leading axis (NumPy)."""
        batches = []
        while len(batches) < n:
            batch = jax.tree.map(np.asarray, self._next())
            size = example_count(batch, "a batch of data")
            if self._size is None:
                self._size = size
            if size == self._size:
                batches.append(batch)
        return jax.tree.map(lambda *b: np.stack(b), *batches)


@dataclasses.dataclass(frozen=True)
class StepInputs:
    """The per-step inputs of the driver: ``inputs(start, length) -> (xs, lane_xs)``.

    ``xs`` holds the steps' shared inputs (leading axis: step): ``step``,
    ``lr``, ``active`` (False for padding past the last step), ``val_now``,
    and either ``idx`` (shared batch indices ``(accum, batch)`` per step) or
    ``batch`` (stacked batches from a :class:`BatchStream`). ``lane_xs`` holds
    per-lane batch indices ``(steps, lanes, accum, batch)`` when every lane
    has its own data order, else nothing.

    Attributes:
      lrs: ``(num_steps,)`` learning rates.
      val_now: ``(num_steps,)`` bool, validate after that step.
      accumulation_steps: micro-batches per step.
      idx: ``(orders, num_steps, accum, batch)`` indices (1 order: shared by
        all lanes; else one per lane), or None with a stream.
      stream: the :class:`BatchStream`, or None with indices.
    """

    lrs: np.ndarray
    val_now: np.ndarray
    accumulation_steps: int
    idx: np.ndarray | None = None
    stream: BatchStream | None = None

    @property
    def num_steps(self) -> int:
        return len(self.lrs)

    def __call__(self, start: int, length: int) -> tuple[dict[str, Any], dict[str, Any]]:
        real = min(length, self.num_steps - start)
        steps = np.arange(start, start + length)
        last = np.minimum(steps, self.num_steps - 1)
        xs: dict[str, Any] = {
            "step": steps.astype(np.int32),
            "lr": self.lrs[last].astype(num.float_dtype()),
            "active": steps < self.num_steps,
            "val_now": self.val_now[last] & (steps < self.num_steps),
        }
        lane_xs: dict[str, Any] = {}
        if self.stream is not None:
            batches = self.stream.take(real * self.accumulation_steps)
            xs["batch"] = jax.tree.map(
                lambda a: _pad(a.reshape(real, self.accumulation_steps, *a.shape[1:]), length),
                batches,
            )
        elif self.idx.shape[0] == 1:
            xs["idx"] = _pad(self.idx[0, start : start + real], length)
        else:  # (lanes, steps, ...) -> (steps, lanes, ...)
            lane_xs["idx"] = _pad(np.swapaxes(self.idx[:, start : start + real], 0, 1), length)
        return xs, lane_xs


def _pad(a: np.ndarray, length: int) -> np.ndarray:
    """Pads ``a`` along axis 0 to ``length`` by repeating its last entry."""
    return np.concatenate([a, np.repeat(a[-1:], length - a.shape[0], axis=0)])


def plan_batches(
    data: Any,
    *,
    batch_size: int,
    num_steps: int,
    accumulation_steps: int,
    shuffle: bool | str,
    key: jax.Array,
    lanes: Lanes,
) -> tuple[Any, np.ndarray | None, BatchStream | None]:
    """Decides where each step's batches come from.

    Returns:
      ``(device_data, idx, stream)``: for a pytree of arrays, the arrays on
      the device and the batch indices ``(orders, num_steps, accum, batch)``
      (one order shared by all lanes, or with ``shuffle="per_seed"`` one per
      lane drawn from ``fold_in(key, seed)``); for an iterable of batches,
      ``(None, None, BatchStream(data))``.
    """
    if shuffle == "per_seed" and lanes.seeds is None:
        raise ValueError("shuffle='per_seed' needs seeds")
    if is_batch_stream(data):
        return None, None, BatchStream(data)
    num_examples = example_count(data)
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size ({batch_size}) is larger than the number of examples in data "
            f"({num_examples})"
        )
    seeds = lanes.seeds if shuffle == "per_seed" else [None]
    orders = {
        s: batch_indices(
            num_examples,
            batch_size,
            num_steps * accumulation_steps,
            bool(shuffle),
            key if s is None else jax.random.fold_in(key, s),
        )
        for s in set(seeds)
    }
    idx = np.stack([orders[s] for s in seeds])
    idx = idx.reshape(len(seeds), num_steps, accumulation_steps, batch_size)
    return jax.tree.map(jnp.asarray, data), idx, None
