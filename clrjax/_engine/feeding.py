"""Data feeding: each step's batch and hyperparameters, handed to the program chunk by chunk.

Batches come from one of two sources (:class:`BatchSource`):

* **indexed**: a pytree of arrays placed on the device once; every step
  gathers its batch by example indices computed here on the host (one data
  order shared by all lanes, or one per seed);
* **stream**: an iterable of ready-made batches (a list, a generator, a
  ``DataLoader``), read as the steps need them and stacked per chunk.

:class:`StepPlan` holds everything per step (learning rates and other
hyperparameters, shared or per lane; where to validate; the batch source) and
cuts it into the chunks the drivers run. Everything here runs on the host.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from clrjax._engine.lane_step import LaneX, StepX

# A stream that yields this many batches in a row of a smaller size than the
# largest seen (or of another structure) is refused instead of read forever.
MAX_SKIPPED_BATCHES = 1000


def is_batch_stream(data: Any, name: str = "data") -> bool:
    """True when ``data`` is an iterable of batches rather than a pytree of arrays.

    Lists, iterators, generators and iterable objects that are not pytree
    containers (e.g. a ``torch.utils.data.DataLoader``) are streams of batches;
    arrays, tuples, dicts and other pytrees are whole datasets.
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


def batch_orders(
    num_examples: int, batch_size: int, num_batches: int, shuffle: bool, rng: np.random.Generator
) -> np.ndarray:
    """Example indices of ``num_batches`` consecutive batches, epoch by epoch.

    Every epoch uses ``num_examples // batch_size`` full batches (the remainder
    of an epoch is dropped, as ``drop_last=True``); with ``shuffle`` every epoch
    is a new permutation drawn from ``rng``.

    Returns:
      int32 array ``(num_batches, batch_size)``.

    Examples:
      >>> import numpy as np
      >>> print(batch_orders(5, 2, 3, False, np.random.default_rng(0)).tolist())
      [[0, 1], [2, 3], [0, 1]]
    """
    per_epoch = num_examples // batch_size
    num_epochs = math.ceil(num_batches / per_epoch)
    if shuffle:
        perms = np.stack([rng.permutation(num_examples) for _ in range(num_epochs)])
    else:
        perms = np.broadcast_to(np.arange(num_examples), (num_epochs, num_examples))
    epochs = perms[:, : per_epoch * batch_size].reshape(-1, batch_size)
    return epochs[:num_batches].astype(np.int32)


class BatchStream:
    """Pulls ready-made batches from an iterable, restarting it when exhausted.

    Batches must share one structure and trailing shapes. Their leading size is
    the largest seen: smaller batches (an epoch's short last batch, or a short
    first one: two batches are read before the first is used) are skipped, and
    a larger batch arriving after the run used smaller ones is an error.
    :data:`MAX_SKIPPED_BATCHES` skipped in a row is an error, so an endless
    stream of odd batches cannot hang the run.
    """

    def __init__(self, data: Any, name: str = "data"):
        self._data = data
        self._name = name
        self._it = iter(data)
        self._size: int | None = None
        self._structure: Any = None
        self._trailing: list[tuple[int, ...]] | None = None
        self._buffer: list[Any] = []
        self._used = False

    def _next(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self._data)
            if self._it is self._data:  # a one-shot iterator: nothing to restart
                raise ValueError(
                    f"{self._name} ran out of batches; pass a re-iterable (list, DataLoader) "
                    "or more batches"
                ) from None
        try:
            return next(self._it)
        except StopIteration:
            raise ValueError(f"{self._name} yields no batches") from None

    def _check(self, batch: Any) -> int:
        structure = jax.tree.structure(batch)
        size = example_count(batch, f"a batch of {self._name}")
        trailing = [np.shape(a)[1:] for a in jax.tree.leaves(batch)]
        if self._structure is None:
            self._structure, self._trailing = structure, trailing
        elif structure != self._structure or trailing != self._trailing:
            raise ValueError(
                f"batches of {self._name} must share one structure and shape; the first was "
                f"{self._structure} with trailing shapes {self._trailing}, a later one "
                f"{structure} with {trailing}"
            )
        return size

    def _pull(self) -> Any:
        """The next batch of the run's batch size (updating it when a larger one arrives)."""
        for _ in range(MAX_SKIPPED_BATCHES):
            batch = jax.tree.map(np.asarray, self._next())
            size = self._check(batch)
            if self._size is not None and size > self._size and self._used:
                raise ValueError(
                    f"{self._name}: a batch of {size} examples arrived after the run started "
                    f"with batches of {self._size}; every batch must have the same size"
                )
            if self._size is None or size > self._size:
                self._size = size
                self._buffer.clear()
                return batch
            if size == self._size:
                return batch
        raise ValueError(
            f"{self._name}: {MAX_SKIPPED_BATCHES} batches in a row were smaller than the batch "
            f"size ({self._size}) and were skipped; pass batches of one size"
        )

    def _prime(self) -> None:
        """Reads two batches before the first is used, so a short first batch is dropped."""
        if self._size is None:
            for _ in range(2):
                batch = self._pull()
                self._buffer.append(batch)

    def take(self, n: int) -> Any:
        """The next ``n`` batches stacked on a new leading axis (NumPy)."""
        self._prime()
        while len(self._buffer) < n:
            batch = self._pull()
            self._buffer.append(batch)
        batches, self._buffer = self._buffer[:n], self._buffer[n:]
        self._used = True
        return jax.tree.map(lambda *b: np.stack(b), *batches)

    def peek(self) -> Any:
        """The next batch, without consuming it."""
        self._prime()
        while not self._buffer:
            batch = self._pull()
            self._buffer.append(batch)
        return self._buffer[0]


@dataclasses.dataclass(frozen=True)
class BatchSource:
    """Where the batches come from.

    Attributes:
      data: the dataset on the device (indexed), or ``None`` with a stream.
      orders: ``(orders, num_steps, [micro,] batch)`` int32 example indices
        (indexed), or ``None``.
      stream: the :class:`BatchStream`, or ``None``.
      accumulation_steps: micro-batches per step with a stream (``None``: one plain
        batch).
    """

    data: Any = None
    orders: np.ndarray | None = None
    stream: BatchStream | None = None
    accumulation_steps: int | None = None

    @property
    def indexed(self) -> bool:
        return self.stream is None


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """Everything per step, cut into chunks by :meth:`chunk`.

    Attributes:
      num_steps: steps to run.
      hparams: ``name -> (num_steps,)`` hyperparameters shared by all lanes
        (e.g. the range test's learning-rate ramp).
      lane_hparams: ``name -> (num_steps, lanes)`` per-lane hyperparameters
        (e.g. each lane's own schedule).
      evaluate: ``(num_steps,)`` bool, validate after that step.
      source: the :class:`BatchSource`.
    """

    num_steps: int
    hparams: Mapping[str, np.ndarray]
    lane_hparams: Mapping[str, np.ndarray]
    evaluate: np.ndarray
    source: BatchSource

    def first(self) -> tuple[StepX, LaneX]:
        """Step 0's inputs without a step axis, consuming nothing from a stream."""
        xs, lane_xs = self._chunk(0, 1, peek=True)
        return jax.tree.map(lambda a: a[0], (xs, lane_xs))

    def chunk(self, start: int, length: int) -> tuple[StepX, LaneX]:
        """Inputs of steps ``start .. start + length - 1`` (past the end: padding, inactive)."""
        return self._chunk(start, length, peek=False)

    def _chunk(self, start: int, length: int, peek: bool) -> tuple[StepX, LaneX]:
        real = min(length, self.num_steps - start)
        steps = np.arange(start, start + length)
        last = np.minimum(steps, self.num_steps - 1)
        src = self.source
        if src.stream is None:
            batch = _pad(np.moveaxis(src.orders[:, start : start + real], 1, 0), length)
        else:
            micro = src.accumulation_steps or 1
            if peek:
                one = jax.tree.map(lambda a: a[None], src.stream.peek())
                batches = jax.tree.map(lambda a: np.repeat(a, micro, axis=0), one)
            else:
                batches = src.stream.take(real * micro)
            shape = (real,) if src.accumulation_steps is None else (real, micro)
            batch = jax.tree.map(
                lambda a: _pad(a[: math.prod(shape)].reshape(*shape, *a.shape[1:]), length),
                batches,
            )
        xs = StepX(
            step=steps.astype(np.int32),
            active=steps < self.num_steps,
            evaluate=self.evaluate[last] & (steps < self.num_steps),
            hparams={k: v[last] for k, v in self.hparams.items()},
            batch=batch,
        )
        return xs, LaneX({k: v[last] for k, v in self.lane_hparams.items()})


def _pad(a: np.ndarray, length: int) -> np.ndarray:
    """Pads ``a`` along axis 0 to ``length`` by repeating its last entry."""
    if a.shape[0] == length:
        return a
    return np.concatenate([a, np.repeat(a[-1:], length - a.shape[0], axis=0)])


def numpy_rng(key: jax.Array, *extra: int) -> np.random.Generator:
    """A NumPy generator seeded from a JAX key's data (and ``extra`` integers)."""
    data = np.asarray(jax.random.key_data(key), np.uint64).ravel()
    return np.random.default_rng([*data.tolist(), *extra])


def plan_batches(
    data: Any,
    *,
    batch_size: int,
    num_steps: int,
    accumulation_steps: int,
    shuffle: bool,
    key: jax.Array,
    seeds: np.ndarray | None = None,
    name: str = "data",
) -> tuple[BatchSource, np.ndarray | None]:
    """The :class:`BatchSource` of a run and each lane's data order.

    Args:
      data: a pytree of arrays sharing a leading example axis, or an iterable of
        ready-made batches (then ``batch_size``, ``shuffle`` and ``seeds`` are
        not used).
      batch_size: examples per (micro-)batch.
      num_steps: steps of the run.
      accumulation_steps: micro-batches per step (> 1: batches carry a micro-batch
        axis).
      shuffle: a new permutation every epoch (drawn from ``key``), else in order.
      key: the PRNG key the orders are drawn from.
      seeds: ``(lanes,)`` seeds giving each lane the order of its seed
        (``fold`` of the key with the seed), or ``None``: one order for all.
      name: the argument's name in error messages.

    Returns:
      ``(source, orders)``: ``orders`` is each lane's index into the source's
      orders, or ``None`` when all lanes share one.
    """
    if is_batch_stream(data, name):
        steps = accumulation_steps if accumulation_steps > 1 else None
        return BatchSource(stream=BatchStream(data, name), accumulation_steps=steps), None
    num_examples = example_count(data, name)
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size ({batch_size}) is larger than the number of examples in {name} "
            f"({num_examples})"
        )
    distinct = [None] if seeds is None else list(dict.fromkeys(int(s) for s in seeds))
    micro = accumulation_steps  # micro-batches per step
    shape = (num_steps, micro, batch_size) if micro > 1 else (num_steps, batch_size)
    orders = np.stack(
        [
            batch_orders(
                num_examples,
                batch_size,
                num_steps * micro,
                shuffle,
                numpy_rng(key) if s is None else numpy_rng(key, s),
            ).reshape(shape)
            for s in distinct
        ]
    )
    lane_orders = None if seeds is None else np.array([distinct.index(int(s)) for s in seeds])
    device_data = jax.tree.map(jax.numpy.asarray, data)
    return BatchSource(data=device_data, orders=orders), lane_orders


def validation_batches(val_data: Any, val_batch_size: int | None, like: Any = None) -> Any:
    """Stacks validation data into ``(num_batches, batch, ...)`` arrays.

    ``val_data`` is a pytree of arrays (split into batches of
    ``val_batch_size``, default all of it; a smaller remainder is dropped) or a
    list of equally shaped batches. With ``like`` (one training batch), the
    validation batches must share its structure and per-example shapes.
    """
    if is_batch_stream(val_data, "val_data"):
        batches = [jax.tree.map(np.asarray, b) for b in val_data]
        if not batches:
            raise ValueError("val_data must contain at least one batch, got an empty list")
        try:
            stacked = jax.tree.map(lambda *b: np.stack(b), *batches)
        except ValueError as e:
            raise ValueError(f"val_data batches must share structure and shapes: {e}") from e
    else:
        n = example_count(val_data, "val_data")
        if n == 0:
            raise ValueError("val_data must contain at least one example, got 0")
        size = n if val_batch_size is None else val_batch_size
        if size > n:
            raise ValueError(f"val_batch_size ({size}) is larger than val_data ({n} examples)")
        k = n // size
        stacked = jax.tree.map(
            lambda a: np.asarray(a)[: k * size].reshape(k, size, *np.shape(a)[1:]), val_data
        )
    if like is not None:
        check_like(jax.tree.map(lambda a: a[0], stacked), like, "val_data", "data")
    return jax.tree.map(jax.numpy.asarray, stacked)


def check_like(batch: Any, like: Any, name: str, like_name: str) -> None:
    """Raises ``ValueError`` unless ``batch`` has ``like``'s structure and per-example shapes."""
    got, want = jax.tree.structure(batch), jax.tree.structure(like)
    if got != want:
        raise ValueError(
            f"{name} must have the structure of {like_name}; got {got}, expected {want}"
        )
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(batch), jax.tree.leaves(like), strict=True
    ):
        a_dtype, b_dtype = np.dtype(a.dtype), np.dtype(b.dtype)
        if np.shape(a)[1:] != np.shape(b)[1:] or a_dtype.kind != b_dtype.kind:
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} has per-example shape {np.shape(a)[1:]} and "
                f"dtype {a_dtype}, unlike {like_name}'s {np.shape(b)[1:]} and {b_dtype}"
            )
