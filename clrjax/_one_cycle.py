"""The 1cycle policy (Smith & Topin, 2019) in PyTorch's, fastai's and optax's conventions.

One cycle is a few annealing phases laid end to end: the LR warms up from
``max_lr / div_factor`` to ``max_lr``, then anneals to a tiny final value
(optionally through a symmetric cool-down first, ``three_phase``) while the
momentum moves the opposite way. The three libraries that ship it agree on
this shape but not on the details, so ``convention`` selects whose numbers to
reproduce:

============  =========  ================  ==========================  ==============
convention    pct_start  final_div_factor  phase ends (steps)          final value at
============  =========  ================  ==========================  ==============
``"torch"``   0.3        1e4 (of initial)  ``p*N - 1``, ``N - 1``      step ``N - 1``
``"fastai"``  0.25       1e5 (of max_lr)   ``p*N``, ``N``              step ``N``
``"optax"``   0.3        1e4 (of initial)  ``floor(p*N)``, ``N``       step ``N``
============  =========  ================  ==========================  ==============
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from clrjax import _numerics as num

_ANNEAL_STRATEGIES = ("cos", "linear")


class _Convention(NamedTuple):
    """How one library lays out the cycle."""

    pct_start: float  # default pct_start
    final_div: float  # default final_div_factor
    final_of_initial: bool  # final LR divides the initial LR (else max_lr)
    offset: float  # phase ends are shifted by this many steps (per phase)
    floor: bool  # the warm-up end is rounded down to a whole step
    end_inclusive: bool  # a step on a phase end belongs to the earlier phase


_CONVENTIONS = {
    "torch": _Convention(
        0.3, 1e4, final_of_initial=True, offset=-1.0, floor=False, end_inclusive=True
    ),
    "fastai": _Convention(
        0.25, 1e5, final_of_initial=False, offset=0.0, floor=False, end_inclusive=False
    ),
    "optax": _Convention(
        0.3, 1e4, final_of_initial=True, offset=0.0, floor=True, end_inclusive=False
    ),
}


def _anneal(start: jax.Array, end: jax.Array, pct: jax.Array, strategy: str) -> jax.Array:
    if strategy == "cos":
        return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1.0)
    return start * (1.0 - pct) + end * pct  # exact at both ends, unlike start + (end - start) * pct


def _check_common(
    total_steps: ArrayLike,
    pct_start: ArrayLike | None,
    anneal_strategy: str,
    three_phase: bool,
    convention: str,
) -> _Convention:
    """Validates the structural arguments shared by both schedules; returns the convention."""
    num.check_choice("convention", convention, tuple(_CONVENTIONS))
    num.check_choice("anneal_strategy", anneal_strategy, _ANNEAL_STRATEGIES)
    if not isinstance(three_phase, bool):
        raise ValueError(f"three_phase must be a bool, got {three_phase!r}")
    num.check_float("total_steps", total_steps, positive=True)
    if pct_start is not None:
        num.check_open_interval("pct_start", pct_start, 0.0, 1.0)
    return _CONVENTIONS[convention]


def _phase_ends(
    pct: ArrayLike, n: ArrayLike, conv: _Convention, three_phase: bool, xp: Any
) -> list[Any]:
    """The convention's phase ends for ``pct`` and ``n`` (total steps); ``xp`` is NumPy or jnp."""
    warm = xp.floor(pct * n) if conv.floor else pct * n
    ends = [warm, 2.0 * warm, n] if three_phase else [warm, n]
    return [e + conv.offset * (i + 1) for i, e in enumerate(ends[:-1])] + [n + conv.offset]


def _phase_schedule(
    total_steps: ArrayLike,
    pct_start: ArrayLike | None,
    anneal_strategy: str,
    three_phase: bool,
    conv: _Convention,
    values: Callable[[], Sequence[jax.Array]],
    shape: tuple[int, ...],
) -> Callable[[ArrayLike], jax.Array]:
    """Piecewise annealing through ``values()`` with the convention's phase ends.

    Phase ``i`` runs from end ``i-1`` (0 for the first) to end ``i`` and anneals
    ``values[i] -> values[i+1]``. Steps are clamped to ``[0, last end]``, so the
    final value is held afterwards. A phase of zero length yields its end
    value (no 0/0, finite gradients). ``shape`` is the arguments' broadcast shape.
    """
    pct = conv.pct_start if pct_start is None else pct_start
    # When pct_start and total_steps are known, the ends are computed in float64
    # on the host, as PyTorch, fastai and optax do in Python floats, and only then
    # rounded: in float32, (0.5 + 1e-9) * 2 - 1 would be 0 instead of 2e-9, and
    # floor(0.29 * 100) 29 instead of 28.
    host_ends = None
    if num.is_concrete((pct, total_steps)):
        pct64, n64 = (np.asarray(x, dtype=np.float64) for x in (pct, total_steps))
        host_ends = _phase_ends(pct64, n64, conv, three_phase, np)

    def schedule(step: ArrayLike) -> jax.Array:
        num.check_step(step, shape)
        if host_ends is None:
            ends = _phase_ends(num.as_float(pct), num.as_float(total_steps), conv, three_phase, jnp)
        else:
            ends = [num.as_float(e) for e in host_ends]
        vals = values()

        t = jnp.clip(num.as_float(step), 0.0, ends[-1])
        # Walk the phases backwards so the first phase whose end is not yet
        # passed wins; the last phase takes every later step.
        starts = [jnp.zeros_like(ends[-1]), *ends[:-1]]
        out = None
        for i in reversed(range(len(ends))):
            q = num.safe_div(t - starts[i], ends[i] - starts[i], 1.0)
            value = _anneal(vals[i], vals[i + 1], q, anneal_strategy)
            if out is None:
                out = value
            else:
                in_phase = t <= ends[i] if conv.end_inclusive else t < ends[i]
                out = jnp.where(in_phase, value, out)
        return out

    return schedule


def one_cycle_schedule(
    total_steps: ArrayLike,
    max_lr: ArrayLike,
    pct_start: ArrayLike | None = None,
    anneal_strategy: str = "cos",
    div_factor: ArrayLike = 25.0,
    final_div_factor: ArrayLike | None = None,
    three_phase: bool = False,
    convention: str = "torch",
) -> Callable[[ArrayLike], jax.Array]:
    r"""The 1cycle learning rate, as PyTorch's ``OneCycleLR`` (or fastai / optax).

    With :math:`\eta_0 = \eta_{max} / \text{div\_factor}` and phase ends
    :math:`e_1 = pN - 1,\ e_2 = N - 1` (``convention="torch"``), the LR anneals
    :math:`\eta_0 \to \eta_{max}` on :math:`[0, e_1]` and
    :math:`\eta_{max} \to \eta_{min} = \eta_0 / \text{final\_div\_factor}` on
    :math:`[e_1, e_2]`, where within a phase :math:`[s, e]` from :math:`a` to
    :math:`b`, with :math:`q = (t - s)/(e - s)`,

    .. math::
       \text{cos}: \ b + \tfrac{a - b}{2}(1 + \cos \pi q) \qquad
       \text{linear}: \ a + (b - a)\, q.

    ``three_phase`` anneals :math:`\eta_0 \to \eta_{max} \to \eta_0` with
    ends :math:`pN - 1,\ 2pN - 2` and then :math:`\eta_0 \to \eta_{min}` until
    :math:`N - 1`.

    ``convention="fastai"`` reproduces ``fit_one_cycle`` / ``combined_cos``:
    position :math:`t/N`, ends :math:`pN` and :math:`N`, defaults
    ``pct_start=0.25`` and ``final_div_factor=1e5`` where the final LR is
    :math:`\eta_{max}/\text{final\_div\_factor}` (fastai's ``div_final``).
    ``convention="optax"`` reproduces ``optax.cosine_onecycle_schedule``
    (with ``anneal_strategy="cos"``): ends :math:`\lfloor pN \rfloor` and
    :math:`N`. Three-phase ends are :math:`(e_1, 2e_1, N)` plus the
    convention's offset. See ``docs/schedules.md`` for the full comparison.

    Steps are clamped to ``[0, last phase end]``: the final value is held
    after the end (PyTorch raises past ``total_steps`` and extrapolates the
    last phase at step ``total_steps``). Phases of zero length (e.g. PyTorch
    with ``pct_start * total_steps == 1``, where ``OneCycleLR`` divides by
    zero) take their end value. When ``pct_start`` and ``total_steps`` are
    concrete, the phase ends are computed in float64 (as the three libraries
    do in Python floats) and only then rounded to the schedule's dtype, so
    ``pct_start=0.5 + 1e-9, total_steps=2`` keeps a warm-up phase of
    ``2e-9`` steps in float32, as in PyTorch.

    Args:
      total_steps: number of steps in the cycle, ``N`` (> 0).
      max_lr: peak learning rate.
      pct_start: fraction ``p`` of the cycle spent warming up, in (0, 1);
        ``None`` means the convention's default (0.3, or 0.25 for fastai).
      anneal_strategy: ``"cos"`` or ``"linear"``.
      div_factor: initial LR is ``max_lr / div_factor`` (> 0).
      final_div_factor: final LR is ``initial / final_div_factor`` (torch,
        optax) or ``max_lr / final_div_factor`` (fastai) (> 0); ``None``
        means the convention's default (1e4, or 1e5 for fastai).
      three_phase: add a symmetric cool-down to the initial LR before the
        final annealing.
      convention: ``"torch"``, ``"fastai"`` or ``"optax"``.

    Returns:
      A schedule ``step -> learning rate``.

    Raises:
      ValueError: for an unknown ``anneal_strategy`` / ``convention``, a
        non-bool ``three_phase``, or concrete non-positive ``total_steps``,
        ``div_factor`` / ``final_div_factor`` or ``pct_start`` outside (0, 1);
        array arguments that do not broadcast together;
        for concrete values the float dtype cannot hold: ``total_steps`` or
        an argument that overflows, a div factor below the smallest normal
        number (``1e-40`` in float32), or an initial or final LR that
        overflows.

    Examples:
      >>> import clrjax
      >>> sched = clrjax.one_cycle_schedule(5, 1.0, pct_start=0.4, anneal_strategy="linear")
      >>> print([round(float(sched(t)), 4) for t in range(6)])
      [0.04, 1.0, 0.6667, 0.3333, 0.0, 0.0]

    References:
      Smith & Topin, `Super-Convergence: Very Fast Training of Neural Networks
      Using Large Learning Rates <https://arxiv.org/abs/1708.07120>`_, 2019

      Smith, `A disciplined approach to neural network hyper-parameters: Part 1
      -- learning rate, batch size, momentum, and weight decay
      <https://arxiv.org/abs/1803.09820>`_, 2018
    """
    conv = _check_common(total_steps, pct_start, anneal_strategy, three_phase, convention)
    num.check_float("max_lr", max_lr)
    num.check_float("div_factor", div_factor, positive=True)
    final_div_factor = conv.final_div if final_div_factor is None else final_div_factor
    num.check_float("final_div_factor", final_div_factor, positive=True)
    shape = num.broadcast_shape(
        total_steps=total_steps,
        pct_start=pct_start,
        max_lr=max_lr,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
    if num.is_concrete((max_lr, div_factor, final_div_factor)):
        # The initial and final LRs must fit the float dtype too.
        peak = np.asarray(max_lr, dtype=np.float64)
        initial = peak / np.asarray(div_factor, dtype=np.float64)
        num.check_float("max_lr / div_factor", initial.tolist())
        name, base = ("initial LR", initial) if conv.final_of_initial else ("max_lr", peak)
        final = base / np.asarray(final_div_factor, dtype=np.float64)
        num.check_float(f"{name} / final_div_factor", final.tolist())

    def values() -> list[jax.Array]:
        peak = num.as_float(max_lr)
        initial = peak / num.as_float(div_factor)
        final = (initial if conv.final_of_initial else peak) / num.as_float(final_div_factor)
        return [initial, peak, initial, final] if three_phase else [initial, peak, final]

    return _phase_schedule(
        total_steps, pct_start, anneal_strategy, three_phase, conv, values, shape
    )


def one_cycle_momentum_schedule(
    total_steps: ArrayLike,
    pct_start: ArrayLike | None = None,
    anneal_strategy: str = "cos",
    base_momentum: ArrayLike = 0.85,
    max_momentum: ArrayLike = 0.95,
    three_phase: bool = False,
    convention: str = "torch",
) -> Callable[[ArrayLike], jax.Array]:
    r"""The 1cycle momentum, moving inversely to :func:`one_cycle_schedule`.

    Same phases as :func:`one_cycle_schedule`, annealing
    ``max_momentum -> base_momentum -> max_momentum`` (three-phase:
    ``max -> base -> max``, then held at ``max_momentum``), as the momentum
    PyTorch's ``OneCycleLR`` writes into the optimizer and fastai's
    ``moms=(0.95, 0.85, 0.95)``.

    Args:
      total_steps: number of steps in the cycle (> 0).
      pct_start: see :func:`one_cycle_schedule`.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      base_momentum: momentum at the LR peak.
      max_momentum: momentum at the start and end of the cycle.
      three_phase: see :func:`one_cycle_schedule`.
      convention: ``"torch"``, ``"fastai"`` or ``"optax"``.

    Returns:
      A schedule ``step -> momentum``.

    Raises:
      ValueError: as :func:`one_cycle_schedule`, and for a concrete
        ``max_momentum - base_momentum`` that overflows the float dtype.

    Examples:
      >>> import clrjax
      >>> sched = clrjax.one_cycle_momentum_schedule(5, pct_start=0.4, anneal_strategy="linear")
      >>> print([round(float(sched(t)), 4) for t in range(5)])
      [0.95, 0.85, 0.8833, 0.9167, 0.95]

    References:
      Smith, `A disciplined approach to neural network hyper-parameters: Part 1
      -- learning rate, batch size, momentum, and weight decay
      <https://arxiv.org/abs/1803.09820>`_, 2018
    """
    conv = _check_common(total_steps, pct_start, anneal_strategy, three_phase, convention)
    num.check_float("base_momentum", base_momentum)
    num.check_float("max_momentum", max_momentum)
    shape = num.broadcast_shape(
        total_steps=total_steps,
        pct_start=pct_start,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
    )
    num.check_span("max_momentum", max_momentum, "base_momentum", base_momentum)

    def values() -> list[jax.Array]:
        high, low = num.as_float(max_momentum), num.as_float(base_momentum)
        return [high, low, high, high] if three_phase else [high, low, high]

    return _phase_schedule(
        total_steps, pct_start, anneal_strategy, three_phase, conv, values, shape
    )
