"""Cosine annealing with warm restarts (SGDR; Loshchilov & Hutter, 2017)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from clrjax import _numerics as num


def cosine_warm_restarts_schedule(
    base_lr: ArrayLike,
    t_0: ArrayLike,
    t_mult: ArrayLike = 1,
    eta_min: ArrayLike = 0.0,
) -> Callable[[ArrayLike], jax.Array]:
    r"""SGDR, as PyTorch's ``CosineAnnealingWarmRestarts`` stepped once per step.

    Cycle :math:`n` (from 0) lasts :math:`T_n = t_0\, m^n` steps (:math:`m` is
    ``t_mult``) and starts at :math:`S_n = t_0 (m^n - 1)/(m - 1)`
    (:math:`S_n = n\, t_0` for :math:`m = 1`). At step :math:`t` in cycle
    :math:`n = \lfloor \log_m(1 + t (m - 1)/t_0) \rfloor`, with
    :math:`T_{cur} = t - S_n`,

    .. math::
       \eta_t = \eta_{min} + \tfrac{1}{2}(\eta_{base} - \eta_{min})
       \left(1 + \cos\left(\pi\, T_{cur} / T_n\right)\right).

    The closed form is corrected at cycle boundaries, so a restart lands
    exactly on :math:`S_n` despite the rounding of the logarithm. Unlike
    PyTorch, ``t_0`` and ``t_mult`` may be non-integers (``t_mult >= 1``).
    Steps below 0 are treated as 0.

    Args:
      base_lr: LR at the start of every cycle.
      t_0: length of the first cycle in steps (> 0).
      t_mult: growth factor of the cycle length (>= 1).
      eta_min: LR approached at the end of every cycle.

    Returns:
      A schedule ``step -> learning rate``.

    Raises:
      ValueError: for concrete ``t_0 <= 0`` or ``t_mult < 1``.

    Examples:
      >>> import clrjax
      >>> sched = clrjax.cosine_warm_restarts_schedule(1.0, t_0=2, t_mult=2)
      >>> print([round(float(sched(t)), 4) for t in range(8)])
      [1.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 1.0, 0.9619]
    """
    num.check_number("base_lr", base_lr)
    num.check_positive("t_0", t_0)
    num.check_number("t_mult", t_mult)
    if num.is_concrete(t_mult) and np.any(np.asarray(t_mult, dtype=np.float64) < 1):
        raise ValueError(f"t_mult must be >= 1, got {t_mult!r}")
    num.check_number("eta_min", eta_min)

    def schedule(step: ArrayLike) -> jax.Array:
        t = jnp.maximum(num.as_float(step), 0.0)
        period = num.as_float(t_0)
        m = num.as_float(t_mult)
        constant = m == 1.0
        safe_m = jnp.where(constant, 2.0, m)

        def cycle_start(n: jax.Array) -> jax.Array:
            geometric = (safe_m**n - 1.0) / (safe_m - 1.0)
            return period * jnp.where(constant, n, geometric)

        n = jnp.where(
            constant,
            jnp.floor(t / period),
            jnp.floor(jnp.log1p(t / period * (safe_m - 1.0)) / jnp.log(safe_m)),
        )
        # The logarithm may land one cycle off next to a restart: fix it up.
        n = jnp.where(cycle_start(n + 1.0) <= t, n + 1.0, n)
        n = jnp.where(cycle_start(n) > t, n - 1.0, n)
        length = period * jnp.where(constant, 1.0, safe_m**n)
        elapsed = jnp.clip(t - cycle_start(n), 0.0, length)
        low = num.as_float(eta_min)
        cosine = 1.0 + jnp.cos(jnp.pi * elapsed / length)
        return low + (num.as_float(base_lr) - low) * cosine / 2.0

    return schedule
