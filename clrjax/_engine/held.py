"""Leaves of a train state that are not arrays, held fixed outside the compiled program.

An Equinox module keeps its activation function, flags and Python numbers
beside its arrays; any state may hold such leaves. Only arrays cross
``jax.jit``, ``vmap`` and ``scan``, so the engine carries a lane's array leaves
and holds the others fixed, as ``eqx.partition(tree, eqx.is_array)`` and
``eqx.combine`` do; the task still sees its whole state. :func:`hold` finds
the layout once, before the lanes start, from an abstract ``init`` (nothing is
computed) and, where a step may change a leaf's type, an abstract step:

* a Python number the step changes (a Flax ``TrainState``'s ``step=0``) is
  carried as an array from the start;
* a floating leaf the step widens (``bfloat16`` Adam moments meeting
  ``float32`` hyperparameters) starts in the wider dtype, as it is after the
  first step of a plain training loop. Other changes stay errors of the lane
  step.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clrjax._engine.task import Task

# Layouts kept per process (task, start layout and shapes; oldest evicted first), so that
# a repeated run, or a find_schedule stage, traces no abstract init or step again.
CACHE_SIZE = 8
_LAYOUTS: dict[Any, tuple[Layout, tuple]] = {}


def is_array(x: Any) -> bool:
    """A JAX or NumPy array (or NumPy scalar): a leaf the engine carries (``eqx.is_array``)."""
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def copy_arrays(tree: Any) -> Any:
    """``tree`` with its arrays copied (never the caller's: a donated carry would delete them)."""
    return jax.tree.map(lambda x: jnp.array(x) if is_array(x) else x, tree)


class Layout(NamedTuple):
    """Where a tree's parts go (hashable: it is part of the compiled program's key).

    Attributes:
      treedef: the tree's structure (every leaf, held or not, is a leaf of it).
      held: per leaf, the value held fixed, or ``None`` where the leaf is a part.
    """

    treedef: Any
    held: tuple


def partition(tree: Any, is_part: Callable[[Any], bool] = is_array) -> tuple[Any, Layout]:
    """``(parts, layout)``: ``tree`` with ``None`` for every leaf not ``is_part``, and the rest.

    Examples:
      >>> import jax.numpy as jnp
      >>> parts, layout = partition({"w": jnp.ones(2), "act": jnp.tanh, "p": 0.5})
      >>> print(parts["act"], parts["p"], layout.held[0] is jnp.tanh, layout.held[1])
      None None True 0.5
      >>> print(combine(parts, layout)["p"])
      0.5
    """
    leaves, treedef = jax.tree.flatten(tree)
    parts = [leaf if is_part(leaf) else None for leaf in leaves]
    held = tuple(None if is_part(leaf) else leaf for leaf in leaves)
    return jax.tree.unflatten(treedef, parts), Layout(treedef, held)


def combine(parts: Any, layout: Layout) -> Any:
    """The tree ``partition`` split: ``parts`` with the held leaves put back."""
    leaves = layout.treedef.flatten_up_to(parts)
    whole = [p if h is None else h for p, h in zip(leaves, layout.held, strict=True)]
    return jax.tree.unflatten(layout.treedef, whole)


def _holds_tracer(leaf: Any) -> bool:
    """``leaf`` is, or closes over (closure cells, ``functools.partial`` arguments), a tracer."""
    inside = [leaf]
    if isinstance(leaf, functools.partial):
        inside += [leaf.func, leaf.args, leaf.keywords]
    for cell in getattr(leaf, "__closure__", None) or ():
        try:
            inside.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(inside))


def _same(new: Any, old: Any) -> bool:
    if new is old:
        return True
    try:
        return type(new) is type(old) and bool(new == old)
    except (TypeError, ValueError):
        return False


def _describe(leaf: Any) -> str:
    return f"{type(leaf).__name__} {leaf!r}" if isinstance(leaf, numbers.Number) else repr(leaf)


def split(tree: Any, layout: Layout, what: str, *, check_held: bool = True) -> Any:
    """``tree``'s parts where ``layout`` has them; raises if a held leaf or the structure changed.

    Args:
      tree: a state built or returned by the task.
      layout: the state's :class:`Layout`.
      what: who built it, for the messages (e.g. ``"the train step"``).
      check_held: raise when a held leaf is not the layout's (``False`` for
        ``init``, which may build equal-acting ones anew, such as a lambda).
    """
    treedef = jax.tree.structure(tree)
    if treedef != layout.treedef:
        raise TypeError(
            f"{what} must return its state with the same structure; got {treedef}, "
            f"expected {layout.treedef}"
        )
    paths = jax.tree_util.tree_leaves_with_path(tree)
    parts = []
    for (path, leaf), held in zip(paths, layout.held, strict=True):
        where = f"state{jax.tree_util.keystr(path)}"
        if held is None:
            if not (is_array(leaf) or isinstance(leaf, numbers.Number)):
                raise TypeError(f"{what} turned the array {where} into {_describe(leaf)}")
            parts.append(leaf)
        elif not check_held or _same(leaf, held):
            parts.append(None)
        else:
            why = (
                " It holds a traced value: a value computed from the arrays must be an array "
                "leaf of the state (e.g. a field of the module), not hidden in a function."
                if _holds_tracer(leaf)
                else ""
            )
            raise TypeError(
                f"{what} replaced {where}, a leaf that is not an array ({_describe(held)}, now "
                f"{_describe(leaf)}); such leaves are held fixed outside the compiled steps, so "
                f"a step must return them unchanged.{why}"
            )
    return jax.tree.unflatten(treedef, parts)


def _abstract(fn: Callable[..., Any], *args: Any) -> tuple[Any, Layout]:
    """``fn(*args)``'s array leaves as ``jax.ShapeDtypeStruct`` and its layout (nothing runs)."""
    layouts = []

    def parts_of(*a: Any) -> Any:
        parts, layout = partition(fn(*a))
        layouts.append(layout)
        return parts

    return jax.eval_shape(parts_of, *args), layouts[0]


def eval_shape(fn: Callable[..., Any], *args: Any) -> Any:
    """``jax.eval_shape`` for an output that may hold leaves that are not arrays (kept as they are).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> out = eval_shape(lambda k: {"w": jax.random.normal(k, (2,)), "act": jnp.tanh},
      ...                  jax.random.key(0))
      >>> print(out["w"].shape, out["act"] is jnp.tanh)
      (2,) True
    """
    return combine(*_abstract(fn, *args))


@dataclasses.dataclass(frozen=True)
class HeldTask:
    """A task whose state's non-array leaves are held here; the engine carries the arrays.

    Attributes:
      task: the task (its state may hold leaves that are not arrays).
      start: the :class:`Layout` of what ``task.init`` is built from.
      train: the :class:`Layout` of the task's state.
      dtypes: per leaf of the state, the dtype ``init`` casts it to (a Python
        number the step changes, a floating leaf it widens), or ``None``.
    """

    task: Task
    start: Layout
    train: Layout
    dtypes: tuple

    def init(self, start: Any, hparams: Mapping[str, jax.Array], key: jax.Array) -> Any:
        train = self.task.init(combine(start, self.start), hparams, key)
        leaves, treedef = jax.tree.flatten(train)
        if treedef == self.train.treedef:
            leaves = [
                leaf if dtype is None else jnp.asarray(leaf, dtype)
                for leaf, dtype in zip(leaves, self.dtypes, strict=True)
            ]
        return split(jax.tree.unflatten(treedef, leaves), self.train, "init", check_held=False)

    def step(
        self, state: Any, batch: Any, hparams: Mapping[str, jax.Array], key: jax.Array
    ) -> tuple[Any, jax.Array]:
        new, loss = self.task.step(combine(state, self.train), batch, hparams, key)
        return split(new, self.train, "the train step"), loss

    def evaluate(self, state: Any, batch: Any, key: jax.Array) -> Any:
        return self.task.evaluate(combine(state, self.train), batch, key)


def hold(
    task: Task, start: Any, hparams: Mapping[str, Any], batch: Any, key: jax.Array
) -> tuple[Any, Any]:
    """``(task, start)`` for the engine: a :class:`HeldTask` and the array leaves of ``start``.

    ``task`` and ``start`` come back unchanged when every leaf of ``start`` and
    of the state is an array that the step keeps as it is.

    Args:
      task: the task.
      start: what ``task.init`` builds a lane's state from.
      hparams: one lane's hyperparameters at step 0.
      batch: one lane's batch at step 0.
      key: a PRNG key.

    Raises:
      TypeError: for a leaf that is not an array and is unhashable, or that
        ``init`` built from traced values.
    """
    start_parts, start_layout = partition(start)
    _check_held(start_layout, "start")
    cache_key = (task, start_layout, _signature((start_parts, hparams, batch)))
    if cache_key not in _LAYOUTS:
        if len(_LAYOUTS) >= CACHE_SIZE:
            _LAYOUTS.pop(next(iter(_LAYOUTS)))
        _LAYOUTS[cache_key] = _state_layout(task, start_parts, start_layout, hparams, batch, key)
    layout, dtypes = _LAYOUTS[cache_key]
    if all(x is None for x in (*start_layout.held, *layout.held, *dtypes)):
        return task, start
    return HeldTask(task, start_layout, layout, dtypes), start_parts


def _signature(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return (treedef, *((np.shape(a), jnp.result_type(a)) for a in leaves))


def _state_layout(
    task: Task,
    start_parts: Any,
    start_layout: Layout,
    hparams: Mapping[str, Any],
    batch: Any,
    key: jax.Array,
) -> tuple[Layout, tuple]:
    """The state's layout and the dtypes ``init`` casts to, from an abstract init (and step)."""
    init = lambda s, h, k: task.init(combine(s, start_layout), h, k)
    train, layout = _abstract(init, start_parts, hparams, key)
    _check_held(layout, "state")
    dtypes = _settle(task, train, layout, hparams, batch, key)
    held = tuple(None if d is not None else h for h, d in zip(layout.held, dtypes, strict=True))
    return layout._replace(held=held), dtypes


def _check_held(layout: Layout, name: str) -> None:
    """Raises ``TypeError`` for a held leaf that holds a traced value or is unhashable."""
    numbered = jax.tree.unflatten(layout.treedef, range(layout.treedef.num_leaves))
    for (path, _), leaf in zip(
        jax.tree_util.tree_leaves_with_path(numbered), layout.held, strict=True
    ):
        where = f"{name}{jax.tree_util.keystr(path)}"
        if _holds_tracer(leaf):
            raise TypeError(
                f"{where} is not an array ({_describe(leaf)}) but holds a traced value (built "
                "from the lane's key?); leaves that are not arrays are held fixed outside the "
                "compiled steps: make the value an array leaf of the state (e.g. a field of "
                "the module)"
            )
        try:
            hash(leaf)
        except TypeError:
            raise TypeError(
                f"{where} is a {type(leaf).__name__}, neither an array nor hashable; leaves "
                "that are not arrays are held fixed and, like static arguments of jax.jit, "
                "must be hashable"
            ) from None


def _settle(
    task: Task, train: Any, layout: Layout, hparams: Mapping[str, Any], batch: Any, key: jax.Array
) -> tuple:
    """Per leaf of the state, the dtype it starts in when the first step changes it, or ``None``."""
    dtypes = [None] * len(layout.held)
    shapes = layout.treedef.flatten_up_to(train)
    floating = {s.dtype for s in shapes if s is not None and jnp.issubdtype(s.dtype, jnp.floating)}
    numbers_held = any(isinstance(h, numbers.Number) for h in layout.held)
    if not numbers_held and len(floating) < 2:
        return tuple(dtypes)  # nothing a step could change (and one trace fewer)
    step = lambda t, b, h, k: task.step(combine(t, layout), b, h, k)[0]
    new, new_layout = _abstract(step, train, batch, hparams, key)
    if new_layout.treedef != layout.treedef:
        return tuple(dtypes)  # the lane step reports it
    news = new_layout.treedef.flatten_up_to(new)
    for i, (old, held, out, out_held) in enumerate(
        zip(shapes, layout.held, news, new_layout.held, strict=True)
    ):
        if isinstance(held, numbers.Number) and not _same(out_held, held):
            dtypes[i] = jnp.asarray(out_held).dtype if out is None else out.dtype
        elif (
            old is not None
            and out is not None
            and old.shape == out.shape
            and jnp.issubdtype(old.dtype, jnp.floating)
            and jnp.issubdtype(out.dtype, jnp.floating)
            and old.dtype != out.dtype
            and jnp.promote_types(old.dtype, out.dtype) == out.dtype
        ):
            dtypes[i] = out.dtype
    return tuple(dtypes)
