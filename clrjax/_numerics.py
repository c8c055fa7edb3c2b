"""Small numeric and validation helpers shared by every clrjax module.

Two rules hold throughout clrjax and live here:

* Schedules compute in the floating dtype JAX gives Python floats
  (``float32``, or ``float64`` under ``jax_enable_x64``); :func:`as_float`
  converts steps and arguments once, without overflowing large integers, and
  :func:`split_step` with :func:`cycle_position` keeps the position of an
  integer step inside a cycle exact where the float dtype cannot hold the step.
* Validation never branches on traced values. The ``check_*`` helpers raise an
  informative ``ValueError`` for *concrete* bad values (Python numbers, NumPy
  and committed JAX arrays) and silently accept tracers, so every numeric
  argument can still be traced through ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clrjax._engine import held


def float_dtype() -> np.dtype:
    """Returns the dtype JAX gives Python floats (float32, or float64 with x64)."""
    return jnp.result_type(float)


def as_float(x: jax.typing.ArrayLike) -> jax.Array:
    """Converts ``x`` to an array of JAX's default float dtype.

    Python and NumPy integers are converted on the host first, so huge step
    counts such as ``2**40`` do not overflow JAX's default ``int32``.

    Args:
      x: a scalar or array (Python number, NumPy value, JAX array or tracer).

    Returns:
      ``x`` as a JAX array of dtype :func:`float_dtype`.

    Examples:
      >>> import clrjax._numerics as num
      >>> print(num.as_float(2**40), num.as_float(2**40).dtype)
      1.0995116e+12 float32
    """
    dtype = float_dtype()
    if isinstance(x, (int, float, np.number, np.ndarray, np.bool_)):
        return jnp.asarray(np.asarray(x, dtype=dtype))
    return jnp.asarray(x).astype(dtype)


# Integer steps are split into a multiple of 2**24 and a remainder below 2**24:
# both parts are exact in float32 for steps below 2**48.
_SPLIT = 2**24


class SplitStep(NamedTuple):
    """A step ``whole + part`` held as two floats that add up to it exactly.

    ``whole`` is a multiple of ``2**24`` and ``0 <= part < 2**24`` for integer
    steps (exact in float32 below ``2**48``); a float step is ``whole`` with
    ``part == 0``.
    """

    whole: jax.Array
    part: jax.Array

    def value(self) -> jax.Array:
        """The step as one float (rounded to the float dtype)."""
        return self.whole + self.part


def split_step(step: jax.typing.ArrayLike) -> SplitStep:
    """Clamps ``step`` to ``>= 0`` and splits it into a :class:`SplitStep`.

    Python and NumPy steps are split on the host (NumPy float64 steps too, so
    ``np.float64(2**31 + 3)`` stays exact); JAX integer arrays and tracers are
    split with integer operations, so an ``int32`` optimizer count is exact up
    to ``2**31 - 1``.

    Args:
      step: a scalar or array of steps (Python number, NumPy value, JAX array
        or tracer).

    Returns:
      The two parts, each a JAX array of dtype :func:`float_dtype`.

    Examples:
      >>> import clrjax._numerics as num
      >>> s = num.split_step(2**31 + 3)
      >>> print(int(s.whole), int(s.part), float(s.value()) == 2**31 + 3)
      2147483648 3 False
    """
    dtype = float_dtype()
    if isinstance(step, int) and abs(step) >= 2**63:
        step = float(step)  # beyond int64: a float step
    if isinstance(step, (int, float, np.number, np.ndarray, np.bool_)):
        host = np.asarray(step)
        if not np.issubdtype(host.dtype, np.integer):
            host = host.astype(np.float64)
        host = np.maximum(host, 0)
        part = host % _SPLIT
        return SplitStep(jnp.asarray((host - part).astype(dtype)), jnp.asarray(part.astype(dtype)))
    x = jnp.asarray(step)
    if jnp.issubdtype(x.dtype, jnp.integer):
        if x.dtype.itemsize < 4:
            x = x.astype(jnp.int32)
        x = jnp.maximum(x, 0)
        part = x % _SPLIT
        return SplitStep((x - part).astype(dtype), part.astype(dtype))
    x = jnp.maximum(x.astype(dtype), 0.0)
    return SplitStep(x, jnp.zeros_like(x))


def cycle_position(step: SplitStep, period: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Returns ``(cycles, offset)`` with ``step = cycles * period + offset``.

    ``offset`` (in ``[0, period)``) is the exact remainder of each part
    (``fmod`` is exact), so a cycle boundary lands exactly on its step even
    where the float dtype cannot represent the step itself; ``cycles`` is the
    number of completed cycles, rounded to the float dtype.

    Args:
      step: the step, from :func:`split_step`.
      period: the cycle length; must be > 0 (guard it with ``jnp.where``).

    Returns:
      The completed cycles and the offset into the current cycle.

    Examples:
      >>> import clrjax._numerics as num
      >>> cycles, offset = num.cycle_position(num.split_step(2**31 + 3), 4000.0)
      >>> print(int(offset), (2**31 + 3) % 4000)
      3651 3651
    """
    period = jnp.asarray(period)
    whole_offset = jnp.fmod(step.whole, period)
    part_offset = jnp.fmod(step.part, period)
    offset = whole_offset + part_offset
    wrapped = offset >= period
    offset = jnp.where(wrapped, offset - period, offset)
    cycles = (
        jnp.round((step.whole - whole_offset) / period)
        + jnp.round((step.part - part_offset) / period)
        + wrapped
    )
    return cycles, offset


def safe_div(
    numerator: jax.typing.ArrayLike,
    denominator: jax.typing.ArrayLike,
    fallback: jax.typing.ArrayLike = 0.0,
) -> jax.Array:
    """Returns ``numerator / denominator``, or ``fallback`` where the denominator is 0.

    Uses the double-``where`` trick, so the gradient is finite (never NaN) even
    where the untaken branch would divide by zero.

    Examples:
      >>> import clrjax._numerics as num
      >>> print(num.safe_div(1.0, 0.0, fallback=7.0))
      7.0
    """
    numerator = jnp.asarray(numerator)
    denominator = jnp.asarray(denominator)
    is_zero = denominator == 0
    safe_denominator = jnp.where(is_zero, jnp.ones_like(denominator), denominator)
    return jnp.where(is_zero, fallback, numerator / safe_denominator)


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds a value known in Python (not a JAX tracer)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _concrete_values(value: Any) -> np.ndarray | None:
    """Returns ``value`` as a NumPy float array, or None when it is traced."""
    if not is_concrete(value):
        return None
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"expected a number or numeric array, got {value!r}") from e


def check_number(name: str, value: Any) -> None:
    """Raises ``TypeError`` unless ``value`` is numeric, ``ValueError`` if NaN/Inf.

    Traced values are accepted without inspection.
    """
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a number or numeric array, got {value!r}")
    try:
        arr = _concrete_values(value)
    except TypeError as e:
        raise TypeError(f"{name} must be a number or numeric array, got {value!r}") from e
    if arr is not None and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")


def check_scalar(name: str, value: Any) -> None:
    """:func:`check_number` for a single number: ``TypeError`` for an array of another shape."""
    check_number(name, value)
    if np.ndim(value) != 0:
        raise TypeError(f"{name} must be a scalar, got {value!r}")


def _has_dtype(value: Any) -> bool:
    try:
        jnp.result_type(value)
    except (TypeError, ValueError):
        return False
    return True


def check_arrays(name: str, tree: Any) -> None:
    """Raises ``TypeError`` unless every leaf of ``tree`` is an array or a number (not a string)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(leaf, (str, bytes)) or not _has_dtype(leaf):
            where = f"{name}{jax.tree_util.keystr(path)}"
            raise TypeError(f"{where} must be an array or a number, got {leaf!r}")


def check_positive(name: str, value: Any) -> None:
    """Raises ``ValueError`` if a concrete ``value`` is not strictly positive."""
    check_number(name, value)
    arr = _concrete_values(value)
    if arr is not None and not np.all(arr > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_non_negative(name: str, value: Any) -> None:
    """Raises ``ValueError`` if a concrete ``value`` is negative."""
    check_number(name, value)
    arr = _concrete_values(value)
    if arr is not None and not np.all(arr >= 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_float(name: str, value: Any, *, positive: bool = False) -> None:
    """:func:`check_number` (or :func:`check_positive`) for a value used in :func:`float_dtype`.

    A concrete value must also survive the conversion: ``ValueError`` if it
    overflows the dtype (``1e39`` in float32) or, with ``positive``, if it lies
    below the dtype's smallest normal number (XLA flushes such values to 0, so
    a divisor of ``1e-40`` would divide by zero in float32).
    """
    if positive:
        check_positive(name, value)
    else:
        check_number(name, value)
    arr = _concrete_values(value)
    if arr is None:
        return
    dtype = float_dtype()
    info = np.finfo(dtype)
    if not np.all(np.abs(arr) <= info.max):
        raise ValueError(
            f"{name} must be at most {info.max:.4g} in magnitude ({dtype.name}), got {value!r}"
        )
    if positive and not np.all(arr >= info.tiny):
        raise ValueError(
            f"{name} must be >= {info.tiny:.4g} (the smallest normal {dtype.name}), got {value!r}"
        )


def check_span(high_name: str, high: Any, low_name: str, low: Any) -> None:
    """:func:`check_float` of ``high - low`` for concrete values (a schedule moving
    between them computes it): ``3e38`` and ``-3e38`` each fit float32, their
    difference does not."""
    if is_concrete((high, low)):
        span = np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)
        check_float(f"{high_name} - {low_name}", span.tolist())


def broadcast_shape(**values: Any) -> tuple[int, ...]:
    """The shape the array arguments ``values`` broadcast to (``None`` values skipped).

    Raises ``ValueError`` naming the arguments and their shapes when they do not
    broadcast together (shapes are known for tracers too).
    """
    shapes = {name: np.shape(value) for name, value in values.items() if value is not None}
    try:
        return np.broadcast_shapes(*shapes.values())
    except ValueError:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items() if shape)
        raise ValueError(f"array arguments must broadcast together, got shapes {listed}") from None


def check_step(step: Any, shape: tuple[int, ...]) -> None:
    """Raises unless ``step`` is numeric (``TypeError``) and broadcasts with ``shape``
    (``ValueError``), the shape of a schedule's arguments."""
    if step is None or isinstance(step, (str, bytes)):
        raise TypeError(f"step must be a number or an array of numbers, got {step!r}")
    try:
        np.broadcast_shapes(np.shape(step), shape)
    except ValueError:
        raise ValueError(
            f"step of shape {np.shape(step)} does not broadcast with the schedule's "
            f"arguments (shape {shape})"
        ) from None


def check_at_most(name: str, value: Any, high: float) -> None:
    """Raises ``ValueError`` if a concrete ``value`` is above ``high``."""
    check_number(name, value)
    arr = _concrete_values(value)
    if arr is not None and not np.all(arr <= high):
        raise ValueError(f"{name} must be <= {high}, got {value!r}")


def check_open_interval(name: str, value: Any, low: float, high: float) -> None:
    """Raises ``ValueError`` if a concrete ``value`` is outside ``(low, high)``."""
    check_number(name, value)
    arr = _concrete_values(value)
    if arr is not None and not np.all((arr > low) & (arr < high)):
        raise ValueError(f"{name} must be in ({low}, {high}), got {value!r}")


def check_count(name: str, value: Any, minimum: int = 1) -> None:
    """Raises ``TypeError`` unless ``value`` is an int, ``ValueError`` if below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def check_flag(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raises ``TypeError`` unless ``value`` is a bool (or None, with ``allow_none``)."""
    if not (isinstance(value, (bool, np.bool_)) or (allow_none and value is None)):
        allowed = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{name} must be {allowed}, got {value!r}")


def checked_init(init_fn: Any, *, concrete: bool = False) -> Any:
    """What ``init_fn(key)`` returns for key 0 (only its shapes unless ``concrete``).

    Raises ``TypeError`` naming ``init_fn`` when it is not callable or the call
    fails with a ``TypeError`` (such as a return value that is not a pytree of
    arrays).
    """
    if not callable(init_fn):
        raise TypeError(f"init_fn must be callable, got {init_fn!r}")
    key = jax.random.key(0)
    try:
        return init_fn(key) if concrete else held.eval_shape(init_fn, key)
    except TypeError as e:
        raise TypeError(f"init_fn(key): {e}") from e


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")


def check_distinct(name: str, values: Iterable[Any]) -> None:
    """Raises ``ValueError`` naming ``name`` when a value repeats in ``values``.

    Examples:
      >>> check_distinct("kinds", ("decay", "decay"))
      Traceback (most recent call last):
      ValueError: kinds lists 'decay' more than once: ('decay', 'decay')
    """
    values = tuple(values)
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{name} lists {value!r} more than once: {values!r}")
        seen.add(value)
