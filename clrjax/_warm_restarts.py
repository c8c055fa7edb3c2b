"""Cosine annealing with warm restarts (SGDR; Loshchilov & Hutter, 2017)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from clrjax import _numerics as num

# Cycle indices are int32 bits, clamped to 2**30: no float32 step reaches that many
# cycles (t_mult - 1 >= 2**-23), and float64 only with t_mult within 1e-8 of 1.
_CYCLE_BITS = 31
_MAX_CYCLE = 2.0**30


def _double_then_step(i: jax.Array, carry: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    """One bit of :func:`_geometric`: ``n -> 2n``, then ``n -> n + 1`` if the bit is set."""
    power, total, m, bits = carry
    total, power = total * (1.0 + power), power * power
    odd = (jnp.right_shift(bits, _CYCLE_BITS - 1 - i) & 1) == 1
    return jnp.where(odd, power * m, power), jnp.where(odd, total + power, total), m, bits


@jax.jit
def _geometric(m: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns ``(m**n, 1 + m + ... + m**(n-1))`` for whole numbers ``0 <= n < 2**31``.

    Binary expansion of ``n`` from its top bit, using only products and sums of
    the two results so far: for integer ``m`` both are exact whenever they are
    representable, unlike ``(m**n - 1) / (m - 1)``, which XLA evaluates with
    ``pow`` and rewrites division by a constant into a rounded reciprocal.
    """
    m, n = jnp.broadcast_arrays(m, n)
    init = (jnp.ones_like(m), jnp.zeros_like(m), m, n.astype(jnp.int32))
    power, total, _, _ = jax.lax.fori_loop(0, _CYCLE_BITS, _double_then_step, init)
    return power, total


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

    Restarts land exactly on their steps, under ``jax.jit`` too: the cycle
    from the logarithm is corrected (by one cycle either way) against cycle
    starts computed by binary expansion of :math:`n` with products and sums
    only, which are exact for integer ``t_0`` and ``t_mult`` while
    :math:`S_n` fits the float dtype's integers (below ``2**24`` in float32).
    With ``t_mult == 1`` the offset :math:`T_{cur}` is exact for integer
    steps up to ``2**48`` in float32; with ``t_mult > 1``, cycle starts
    beyond ``2**24`` are rounded to float32, an error of about ``1e-7`` of
    the cycle's length. Unlike PyTorch, ``t_0`` and ``t_mult`` may be
    non-integers (``t_mult >= 1``). Steps below 0 are treated as 0. Traced
    values that would be refused if concrete stay finite: ``t_0 <= 0`` gives
    ``base_lr`` and ``t_mult < 1`` counts as 1.

    Args:
      base_lr: LR at the start of every cycle.
      t_0: length of the first cycle in steps (> 0).
      t_mult: growth factor of the cycle length (>= 1).
      eta_min: LR approached at the end of every cycle.

    Returns:
      A schedule ``step -> learning rate``.

    Raises:
      ValueError: for concrete ``t_0 <= 0`` or ``t_mult < 1``, array arguments
        that do not broadcast together, or a concrete value that the float
        dtype cannot hold (overflow, also of ``base_lr - eta_min``, or ``t_0``
        below its smallest normal number).

    Examples:
      >>> import clrjax
      >>> sched = clrjax.cosine_warm_restarts_schedule(1.0, t_0=2, t_mult=2)
      >>> print([round(float(sched(t)), 4) for t in range(8)])
      [1.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 1.0, 0.9619]

    References:
      Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm
      Restarts <https://arxiv.org/abs/1608.03983>`_, 2017
    """
    num.check_float("base_lr", base_lr)
    num.check_float("t_0", t_0, positive=True)
    num.check_float("t_mult", t_mult)
    if num.is_concrete(t_mult) and np.any(np.asarray(t_mult, dtype=np.float64) < 1):
        raise ValueError(f"t_mult must be >= 1, got {t_mult!r}")
    num.check_float("eta_min", eta_min)
    shape = num.broadcast_shape(base_lr=base_lr, t_0=t_0, t_mult=t_mult, eta_min=eta_min)
    num.check_span("base_lr", base_lr, "eta_min", eta_min)

    def schedule(step: ArrayLike) -> jax.Array:
        num.check_step(step, shape)
        split = num.split_step(step)
        t = split.value()
        first = num.as_float(t_0)
        # Traced t_0 <= 0 or t_mult < 1 cannot be rejected: every step is then a
        # restart, or t_mult counts as 1, with finite values and gradients.
        has_length = first > 0
        period = jnp.where(has_length, first, 1.0)
        m = jnp.maximum(num.as_float(t_mult), 1.0)
        constant = m == 1.0
        safe_m = jnp.where(constant, 2.0, m)

        # t_mult == 1: the exact offset into a cycle of length t_0.
        _, offset = num.cycle_position(split, period)

        # t_mult > 1: estimate the cycle n from the logarithm, then pick the one of
        # n - 1, n, n + 1 whose start S_k <= t < S_{k+1}, with S_k computed exactly.
        estimate = jnp.floor(jnp.log1p(t / period * (safe_m - 1.0)) / jnp.log(safe_m))
        power, total = _geometric(safe_m, jnp.clip(estimate - 1.0, 0.0, _MAX_CYCLE))
        for _ in range(2):
            next_power, next_total = power * safe_m, total + power
            later = period * next_total <= t
            power = jnp.where(later, next_power, power)
            total = jnp.where(later, next_total, total)
        length = jnp.where(constant, period, period * power)
        elapsed = jnp.where(constant, offset, (split.whole - period * total) + split.part)
        elapsed = jnp.clip(elapsed, 0.0, length)

        low = num.as_float(eta_min)
        high = num.as_float(base_lr)
        # In [0, 1]: (high - low) * (1 + cos) could overflow before the halving.
        half_cosine = (1.0 + jnp.cos(jnp.pi * elapsed / length)) / 2.0
        return jnp.where(has_length, low + (high - low) * half_cosine, high)

    return schedule
