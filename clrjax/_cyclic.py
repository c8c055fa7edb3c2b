"""Cyclical learning rates and cyclical momentum (Smith, 2017).

The learning rate rises linearly from ``base_lr`` to ``max_lr`` over
``step_size_up`` steps, falls back over ``step_size_down`` steps, and repeats;
an optional scaling policy shrinks the amplitude per cycle or per step. The
values match ``torch.optim.lr_scheduler.CyclicLR`` after the same number of
scheduler steps.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from clrjax import _numerics as num

_MODES = ("triangular", "triangular2", "exp_range")
_SCALE_MODES = ("cycle", "iterations")


def _triangular2_scale(cycle: jax.Array) -> jax.Array:
    return 0.5 ** (cycle - 1.0)


def _log_gamma(gamma: ArrayLike) -> jax.Array:
    """``log(gamma)``: from float64 on the host for a concrete ``gamma``, so the
    ``exp_range`` scale ``gamma**t`` is not skewed by rounding ``gamma`` to float32
    (``0.99994**18000`` would be off by 4e-4 relative); finite for a traced ``gamma <= 0``."""
    if num.is_concrete(gamma):
        return num.as_float(np.log(np.asarray(gamma, dtype=np.float64)))
    g = num.as_float(gamma)
    positive = g > 0
    # A very negative finite log gives gamma**0 == 1 and gamma**t == 0 after, without NaN.
    return jnp.where(positive, jnp.log(jnp.where(positive, g, 1.0)), jnp.finfo(g.dtype).min)


def _cycle_fraction(
    step_size_up: ArrayLike,
    step_size_down: ArrayLike | None,
    mode: str,
    gamma: ArrayLike,
    scale_fn: Callable[[jax.Array], ArrayLike] | None,
    scale_mode: str,
    span: tuple[str, ArrayLike, str, ArrayLike],
) -> Callable[[ArrayLike], jax.Array]:
    """Validates the cycle arguments; returns ``step -> triangle(step) * scale``.

    The result is the fraction of the amplitude reached at ``step``; the LR and
    momentum schedules only differ in how they map it to a value, between the
    two bounds of ``span``: ``(high name, high, low name, low)``, checked here too.
    """
    high_name, high, low_name, low = span
    num.check_float(low_name, low)
    num.check_float(high_name, high)
    num.check_float("step_size_up", step_size_up, positive=True)
    if step_size_down is not None:
        num.check_float("step_size_down", step_size_down, positive=True)
    num.check_float("gamma", gamma, positive=True)
    shape = num.broadcast_shape(
        **{high_name: high, low_name: low},
        step_size_up=step_size_up,
        step_size_down=step_size_down,
        gamma=gamma,
    )
    num.check_span(high_name, high, low_name, low)
    if num.is_concrete((step_size_up, step_size_down)):
        up = np.asarray(step_size_up, dtype=np.float64)
        down = up if step_size_down is None else np.asarray(step_size_down, dtype=np.float64)
        num.check_float("step_size_up + step_size_down", (up + down).tolist())
    num.check_choice("mode", mode, _MODES)
    num.check_choice("scale_mode", scale_mode, _SCALE_MODES)
    if scale_fn is None and mode == "exp_range":
        # gamma > 1 grows the amplitude without bound (inf, then NaN, at large steps).
        num.check_at_most("gamma", gamma, 1.0)
    if scale_fn is not None and not callable(scale_fn):
        raise ValueError(f"scale_fn must be callable or None, got {scale_fn!r}")

    if scale_fn is None:
        # The built-in modes fix the scaling variable, as in PyTorch.
        if mode == "triangular":
            scale_fn, scale_mode = jnp.ones_like, "cycle"
        elif mode == "triangular2":
            scale_fn, scale_mode = _triangular2_scale, "cycle"
        else:
            scale_fn, scale_mode = (lambda it: jnp.exp(it * _log_gamma(gamma))), "iterations"

    def fraction(step: ArrayLike) -> jax.Array:
        num.check_step(step, shape)
        split = num.split_step(step)
        up = num.as_float(step_size_up)
        down = up if step_size_down is None else num.as_float(step_size_down)
        total = up + down
        # A traced zero-length cycle (not rejected: it cannot be inspected) stays at base_lr.
        has_length = total > 0
        period = jnp.where(has_length, total, 1.0)
        # Completed cycles and position inside the current one (x in [0, 1)),
        # exact for integer steps that float32 cannot represent.
        done, offset = num.cycle_position(split, period)
        x = jnp.where(has_length, offset / period, 0.0)
        ratio = num.safe_div(up, total, 1.0)
        rising = x <= ratio
        triangle = jnp.where(
            rising, num.safe_div(x, ratio, 1.0), num.safe_div(x - 1.0, ratio - 1.0, 1.0)
        )
        scale_arg = done + 1.0 if scale_mode == "cycle" else split.value()
        return triangle * jnp.asarray(scale_fn(scale_arg), dtype=x.dtype)

    return fraction


def cyclic_schedule(
    base_lr: ArrayLike,
    max_lr: ArrayLike,
    step_size_up: ArrayLike = 2000,
    step_size_down: ArrayLike | None = None,
    mode: str = "triangular",
    gamma: ArrayLike = 1.0,
    scale_fn: Callable[[jax.Array], ArrayLike] | None = None,
    scale_mode: str = "cycle",
) -> Callable[[ArrayLike], jax.Array]:
    r"""Cyclical learning rate (CLR), as PyTorch's ``CyclicLR``.

    With :math:`T = s_{up} + s_{down}`, cycle :math:`c = \lfloor 1 + t/T \rfloor`
    and position :math:`x = 1 + t/T - c \in [0, 1)`, the triangle is
    :math:`h = x / r` for :math:`x \le r = s_{up}/T` and
    :math:`h = (x - 1)/(r - 1)` after, and

    .. math::
       \eta_t = \eta_{base} + (\eta_{max} - \eta_{base})\, h\, \sigma

    where the scale :math:`\sigma` is 1 (``"triangular"``),
    :math:`2^{1-c}` (``"triangular2"``), :math:`\gamma^t` (``"exp_range"``),
    or ``scale_fn(c)`` / ``scale_fn(t)`` for ``scale_mode`` ``"cycle"`` /
    ``"iterations"``.

    ``max_lr < base_lr`` is allowed (an inverted cycle), as in PyTorch. Steps
    below 0 are treated as 0.

    Precision: the position in the cycle is exact for integer steps up to
    ``2**48`` in float32 (the step is split into two exactly representable
    parts and each is reduced modulo :math:`T` with ``fmod``), so step
    ``2**40`` lands where it should, not where float32's rounding of it would.
    For ``"exp_range"`` with a concrete ``gamma``, :math:`\gamma^t` is
    computed as :math:`\exp(t \log\gamma)` with :math:`\log\gamma` taken
    in float64, so rounding ``gamma`` to float32 does not skew it; a traced
    ``gamma`` is used as rounded. A traced cycle of length 0 (not rejected:
    it cannot be inspected) gives ``base_lr``.

    Args:
      base_lr: lower LR boundary, reached at the start of every cycle.
      max_lr: upper LR boundary, reached after ``step_size_up`` steps (when
        not scaled down).
      step_size_up: steps in the rising half of a cycle (> 0).
      step_size_down: steps in the falling half (> 0); ``None`` means
        ``step_size_up``.
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``; ignored
        when ``scale_fn`` is given (it is still validated).
      gamma: base of the ``"exp_range"`` scale :math:`\gamma^t`; in (0, 1] for
        ``"exp_range"`` (a concrete ``gamma > 1``, whose amplitude grows without
        bound, is refused; PyTorch accepts it), > 0 otherwise.
      scale_fn: custom scale policy, a jnp-traceable callable with
        ``0 <= scale_fn(x) <= 1``; overrides ``mode``.
      scale_mode: ``"cycle"`` (``scale_fn`` gets the 1-based cycle number)
        or ``"iterations"`` (it gets the step); used only with ``scale_fn``.

    Returns:
      A schedule ``step -> learning rate``.

    Raises:
      ValueError: for an unknown ``mode`` / ``scale_mode``, non-positive step
        sizes or ``gamma``, a ``scale_fn`` that is not callable, array
        arguments that do not broadcast together, or a concrete value that the
        float dtype cannot hold (overflow, also of ``max_lr - base_lr``, or a
        step size or ``gamma`` below its smallest normal number).

    Examples:
      >>> import clrjax
      >>> sched = clrjax.cyclic_schedule(0.1, 1.0, step_size_up=2, step_size_down=4)
      >>> print([round(float(sched(t)), 3) for t in range(7)])
      [0.1, 0.55, 1.0, 0.775, 0.55, 0.325, 0.1]

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks
      <https://arxiv.org/abs/1506.01186>`_, 2017
    """
    fraction = _cycle_fraction(
        step_size_up,
        step_size_down,
        mode,
        gamma,
        scale_fn,
        scale_mode,
        span=("max_lr", max_lr, "base_lr", base_lr),
    )

    def schedule(step: ArrayLike) -> jax.Array:
        low = num.as_float(base_lr)
        return low + (num.as_float(max_lr) - low) * fraction(step)

    return schedule


def triangular_schedule(
    base_lr: ArrayLike,
    max_lr: ArrayLike,
    step_size_up: ArrayLike = 2000,
    step_size_down: ArrayLike | None = None,
) -> Callable[[ArrayLike], jax.Array]:
    """Triangular CLR: :func:`cyclic_schedule` with ``mode="triangular"``.

    Examples:
      >>> import clrjax
      >>> sched = clrjax.triangular_schedule(0.0, 1.0, step_size_up=2)
      >>> print([float(sched(t)) for t in range(6)])
      [0.0, 0.5, 1.0, 0.5, 0.0, 0.5]

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks
      <https://arxiv.org/abs/1506.01186>`_, 2017
    """
    return cyclic_schedule(base_lr, max_lr, step_size_up, step_size_down, mode="triangular")


def triangular2_schedule(
    base_lr: ArrayLike,
    max_lr: ArrayLike,
    step_size_up: ArrayLike = 2000,
    step_size_down: ArrayLike | None = None,
) -> Callable[[ArrayLike], jax.Array]:
    """CLR whose amplitude halves every cycle: ``mode="triangular2"``.

    Examples:
      >>> import clrjax
      >>> sched = clrjax.triangular2_schedule(0.0, 1.0, step_size_up=1)
      >>> print([float(sched(t)) for t in range(6)])
      [0.0, 1.0, 0.0, 0.5, 0.0, 0.25]

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks
      <https://arxiv.org/abs/1506.01186>`_, 2017
    """
    return cyclic_schedule(base_lr, max_lr, step_size_up, step_size_down, mode="triangular2")


def exp_range_schedule(
    base_lr: ArrayLike,
    max_lr: ArrayLike,
    step_size_up: ArrayLike = 2000,
    step_size_down: ArrayLike | None = None,
    gamma: ArrayLike = 1.0,
) -> Callable[[ArrayLike], jax.Array]:
    r"""CLR whose amplitude decays as :math:`\gamma^t`: ``mode="exp_range"``.

    Examples:
      >>> import clrjax
      >>> sched = clrjax.exp_range_schedule(0.0, 1.0, step_size_up=1, gamma=0.5)
      >>> print([float(sched(t)) for t in range(4)])
      [0.0, 0.5, 0.0, 0.125]

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks
      <https://arxiv.org/abs/1506.01186>`_, 2017
    """
    return cyclic_schedule(
        base_lr, max_lr, step_size_up, step_size_down, mode="exp_range", gamma=gamma
    )


def cyclic_momentum_schedule(
    base_momentum: ArrayLike = 0.8,
    max_momentum: ArrayLike = 0.9,
    step_size_up: ArrayLike = 2000,
    step_size_down: ArrayLike | None = None,
    mode: str = "triangular",
    gamma: ArrayLike = 1.0,
    scale_fn: Callable[[jax.Array], ArrayLike] | None = None,
    scale_mode: str = "cycle",
) -> Callable[[ArrayLike], jax.Array]:
    r"""Cyclical momentum, moving inversely to :func:`cyclic_schedule`.

    With the same triangle :math:`h` and scale :math:`\sigma` as
    :func:`cyclic_schedule` (and the same arguments),

    .. math::
       m_t = m_{max} - (m_{max} - m_{base})\, h\, \sigma

    so momentum is ``max_momentum`` where the LR is at ``base_lr`` and
    ``base_momentum`` at the LR peak, as the momentum PyTorch's ``CyclicLR``
    writes into the optimizer (``cycle_momentum=True``).

    Args:
      base_momentum: momentum at the LR peak.
      max_momentum: momentum at the start of every cycle.
      step_size_up: see :func:`cyclic_schedule`.
      step_size_down: see :func:`cyclic_schedule`.
      mode: see :func:`cyclic_schedule`.
      gamma: see :func:`cyclic_schedule`.
      scale_fn: see :func:`cyclic_schedule`.
      scale_mode: see :func:`cyclic_schedule`.

    Returns:
      A schedule ``step -> momentum``.

    Raises:
      ValueError: as :func:`cyclic_schedule` (with ``max_momentum - base_momentum``).

    Examples:
      >>> import clrjax
      >>> sched = clrjax.cyclic_momentum_schedule(0.8, 0.9, step_size_up=2)
      >>> print([round(float(sched(t)), 3) for t in range(5)])
      [0.9, 0.85, 0.8, 0.85, 0.9]

    References:
      Smith, `A disciplined approach to neural network hyper-parameters: Part 1
      -- learning rate, batch size, momentum, and weight decay
      <https://arxiv.org/abs/1803.09820>`_, 2018
    """
    fraction = _cycle_fraction(
        step_size_up,
        step_size_down,
        mode,
        gamma,
        scale_fn,
        scale_mode,
        span=("max_momentum", max_momentum, "base_momentum", base_momentum),
    )

    def schedule(step: ArrayLike) -> jax.Array:
        high = num.as_float(max_momentum)
        return high - (high - num.as_float(base_momentum)) * fraction(step)

    return schedule
