"""Candidate schedules: peak learning rates read off a range-test curve, times schedule kinds.

A *candidate* is a schedule kind, a peak learning rate and a point of the
hyperparameter grid. :func:`peak_bracket` proposes the peaks of one curve
(from its suggestions);
:func:`kind_schedules` turns a kind and a peak into the learning-rate (and
momentum) schedule of a run of any length, so the same candidate can be
trained on a short budget and on the full one.

Kinds:

* ``"one_cycle"``: :func:`clrjax.one_cycle_schedule` up to the peak and down
  (Smith & Topin, 2019), with :func:`clrjax.one_cycle_momentum_schedule`
  (0.95 -> 0.85 -> 0.95) when the optimizer has a momentum (or Adam's ``b1``);
* ``"decay"``: the peak held and multiplied by ``decay_rate`` (0.97) after
  every epoch, momentum constant (the seed recipe's "found LR, decayed").
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clrjax._one_cycle import one_cycle_momentum_schedule, one_cycle_schedule

KINDS = ("one_cycle", "decay")
MOMENTUM_NAMES = ("momentum", "b1")  # the optimizer argument one-cycle cycles
# The fewest range-test steps that can propose a peak: peak_bracket needs the
# "minimum" pick, which reads steps [n // 10, n - 5) (fastai's trimming, see
# clrjax.suggest) and needs at least 2 of them: n - n // 10 - 5 >= 2 from n = 7.
MIN_RANGE_TEST_STEPS = 7


class Candidate(NamedTuple):
    """One schedule to race.

    Attributes:
      kind: one of :data:`KINDS`.
      peak: the peak (one-cycle) or initial (decay) learning rate.
      hparams: the grid point, ``name -> value`` (empty without a grid).
      source: the suggestion methods whose pick is nearest to ``peak`` (``""``:
        a point of the geometric spread only; ``"beyond edge"``: a peak raced
        past the bracket's edge because the edge led a rung, see
        :func:`beyond_edge`).
    """

    kind: str
    peak: float
    hparams: dict[str, float]
    source: str

    def label(self) -> str:
        """E.g. ``"one_cycle 0.31 (weight_decay=0.0005)"``."""
        grid = ", ".join(f"{k}={v:g}" for k, v in self.hparams.items())
        return f"{self.kind} {self.peak:.3g}" + (f" ({grid})" if grid else "")


class Bracket(NamedTuple):
    """The peak learning rates one range-test curve proposes.

    Attributes:
      peaks: increasing peak learning rates.
      sources: for each peak, the suggestion methods whose pick is nearest to it
        (``""`` for a point of the spread alone).
      outside: ``method -> pick`` for picks too far outside the bracket to be
        raced (the erratic ones).
    """

    peaks: tuple[float, ...]
    sources: tuple[str, ...]
    outside: dict[str, float]


def peak_bracket(picks: Mapping[str, float], *, ratio: float, upper: float) -> Bracket:
    r"""Peaks spaced geometrically from the ``valley`` pick to ``upper`` x the lowest loss's LR.

    With :math:`lo` the ``"valley"`` pick and :math:`hi` ``upper`` times the
    learning rate of the lowest smoothed loss (ten times the ``"minimum"``
    pick), the peaks are :math:`k = \max(2, \lceil \ln(hi/lo) / \ln r \rceil + 1)`
    points spaced geometrically from :math:`lo` to :math:`hi` (ratio at most
    :math:`r`). A curve without that order (flat, or broken) gives the
    ``"minimum"`` pick times 1/3, 1 and 3; no pick at all, no peak.

    Args:
      picks: ``method -> suggested learning rate`` (NaN: no suggestion), e.g.
        the log-medians over the seeds of one grid point.
      ratio: the largest ratio between neighbouring peaks.
      upper: the bracket's top, as a multiple of the lowest loss's learning rate.

    Examples:
      >>> b = peak_bracket({"valley": 0.01, "minimum": 0.05, "steep": 0.02, "slide": 3.0},
      ...                  ratio=2.5, upper=2.0)
      >>> print([round(p, 4) for p in b.peaks])
      [0.01, 0.0215, 0.0464, 0.1, 0.2154, 0.4642, 1.0]
      >>> print(b.sources, b.outside)
      ('valley', 'steep', 'minimum', '', '', '', '') {'slide': 3.0}
    """
    finite = {m: float(v) for m, v in picks.items() if np.isfinite(v) and v > 0}
    minimum = finite.get("minimum")
    if minimum is None:
        return Bracket((), (), {})
    low, high = finite.get("valley", math.nan), upper * 10 * minimum
    if low < high:
        count = max(2, math.ceil(math.log(high / low) / math.log(ratio)) + 1)
        peaks = np.geomspace(low, high, count)
    else:
        peaks = minimum * np.array([1 / 3, 1.0, 3.0])
    logs = np.log(peaks)
    half_step = math.log(ratio) / 2
    sources: list[list[str]] = [[] for _ in peaks]
    outside = {}
    for method, lr in finite.items():
        nearest = int(np.argmin(np.abs(logs - math.log(lr))))
        if abs(logs[nearest] - math.log(lr)) <= half_step:
            sources[nearest].append(method)
        else:
            outside[method] = lr
    return Bracket(tuple(map(float, peaks)), tuple(", ".join(s) for s in sources), outside)


BEYOND_EDGE = "beyond edge"  # the source of a peak raced past the bracket's edge


def edge(candidates: Sequence[Candidate], best: Candidate) -> int:
    """``1``: ``best`` has the top peak of its kind and grid point; ``-1``: the bottom; else 0.

    Examples:
      >>> cands = [Candidate("one_cycle", p, {}, "") for p in (0.1, 0.2, 0.4)]
      >>> print([edge(cands, c) for c in cands])
      [-1, 0, 1]
    """
    peaks = [c.peak for c in candidates if c.kind == best.kind and c.hparams == best.hparams]
    if best.peak >= max(peaks):
        return 1
    return -1 if best.peak <= min(peaks) else 0


def beyond_edge(
    candidates: Sequence[Candidate], best: Candidate, *, ratio: float, limits: tuple[float, float]
) -> Candidate | None:
    """The peak one step past ``best`` when ``best`` is an edge of its kind and grid point.

    The step is the ratio between the two outermost peaks at that edge
    (``ratio`` when only one was raced); a peak past ``limits`` (e.g. the
    range test's span) is clipped to it, and none is proposed when that
    leaves less than half a step.

    Args:
      candidates: every candidate raced so far.
      best: the candidate that leads a rung.
      ratio: the step when ``best``'s kind and grid point has a single peak.
      limits: ``(lowest, highest)`` learning rate a peak may take.

    Returns:
      A new candidate (source :data:`BEYOND_EDGE`), or ``None``: ``best`` is
      interior, or the limit is within half a step.

    Examples:
      >>> cands = [Candidate("decay", p, {}, "") for p in (0.1, 0.2)]
      >>> print(beyond_edge(cands, cands[1], ratio=2.5, limits=(1e-5, 10.0)).peak)
      0.4
      >>> print(beyond_edge(cands, cands[1], ratio=2.5, limits=(1e-5, 0.25)))
      None
    """
    side = edge(candidates, best)
    if not side:
        return None
    peaks = sorted(c.peak for c in candidates if c.kind == best.kind and c.hparams == best.hparams)
    if len(peaks) < 2:
        step = ratio
    else:
        step = peaks[-1] / peaks[-2] if side > 0 else peaks[1] / peaks[0]
    low, high = limits
    peak = float(np.clip(best.peak * step**side, low, high))
    if abs(math.log(peak / best.peak)) < math.log(step) / 2:
        return None
    return Candidate(best.kind, peak, dict(best.hparams), BEYOND_EDGE)


def momentum_default(optimizer: Callable[..., Any]) -> tuple[str | None, float | None]:
    """``(name, default)`` of the optimizer argument one-cycle cycles, or ``(None, None)``.

    The argument is ``momentum`` or ``b1`` with a numeric default: an optimizer
    without momentum (``optax.sgd``'s default ``momentum=None``) is not given one.

    Examples:
      >>> import optax, clrjax
      >>> print(momentum_default(clrjax.pytorch_sgd), momentum_default(optax.adamw),
      ...       momentum_default(optax.sgd))
      ('momentum', 0.9) ('b1', 0.9) (None, None)
    """
    try:
        params = inspect.signature(optimizer).parameters
    except (TypeError, ValueError):
        return None, None
    for name in MOMENTUM_NAMES:
        default = params[name].default if name in params else None
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            return name, float(default)
    return None, None


def kind_schedules(
    kind: str,
    peak: jax.typing.ArrayLike,
    num_steps: int,
    *,
    steps_per_epoch: float,
    decay_rate: float,
    momentum: float | None,
) -> tuple[optax.Schedule, optax.Schedule | None]:
    """The learning-rate schedule (and momentum schedule, or None) of a run of ``num_steps``.

    Args:
      kind: one of :data:`KINDS`.
      peak: the peak (or initial) learning rate; may be traced.
      num_steps: the run's length.
      steps_per_epoch: steps between two ``"decay"`` decays (may be fractional
        for a run shortened from a longer budget: the decay keeps its total).
      decay_rate: the ``"decay"`` factor per epoch.
      momentum: the optimizer's constant momentum (held by ``"decay"``; ``None``:
        the optimizer has none, and no momentum schedule is returned).

    Examples:
      >>> lr, mom = kind_schedules("decay", 0.1, 100, steps_per_epoch=10, decay_rate=0.5,
      ...                          momentum=0.9)
      >>> print(round(float(lr(25)), 4), float(mom(25)))
      0.025 0.9
    """
    if kind == "one_cycle":
        lr = one_cycle_schedule(num_steps, peak)
        mom = one_cycle_momentum_schedule(num_steps) if momentum is not None else None
        return lr, mom
    if kind == "decay":

        def lr(step: jax.typing.ArrayLike) -> jax.Array:
            epochs = jnp.floor(jnp.asarray(step, jnp.float32) / steps_per_epoch)
            return jnp.asarray(peak, jnp.float32) * jnp.float32(decay_rate) ** epochs

        if momentum is None:
            return lr, None
        return lr, lambda step: jnp.full(jnp.shape(step), momentum, jnp.float32)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def schedule_arrays(
    candidates: Sequence[Candidate],
    num_steps: int,
    *,
    steps_per_epoch: float,
    decay_rate: float,
    momentum: float | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(num_steps, lanes)`` learning rates (and momenta) of every candidate."""
    steps = jnp.arange(num_steps)
    lrs, moms = [], []
    for c in candidates:
        lr, mom = kind_schedules(
            c.kind,
            c.peak,
            num_steps,
            steps_per_epoch=steps_per_epoch,
            decay_rate=decay_rate,
            momentum=momentum,
        )
        lrs.append(np.asarray(lr(steps), np.float32))
        if mom is not None:
            moms.append(np.asarray(mom(steps), np.float32))
    return np.stack(lrs, axis=1), (np.stack(moms, axis=1) if moms else None)
