"""Small numeric and validation helpers shared by every clrjax module.

Two rules hold throughout clrjax and live here:

* Schedules compute in the floating dtype JAX gives Python floats
  (``float32``, or ``float64`` under ``jax_enable_x64``); :func:`as_float`
  converts steps and arguments once, without overflowing large integers.
* Validation never branches on traced values. The ``check_*`` helpers raise an
  informative ``ValueError`` for *concrete* bad values (Python numbers, NumPy
  and committed JAX arrays) and silently accept tracers, so every numeric
  argument can still be traced through ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
