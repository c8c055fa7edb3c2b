"""Learning-rate suggestions from LR range-test curves (pure NumPy).

Every method reads one range-test curve -- learning rates ``lrs`` and the
losses recorded at them -- and returns one suggested learning rate. The
methods reproduce the suggestion rules of two reference implementations on
the same curve:

* ``"steepest"``: torch-lr-finder's ``LRFinder.plot(suggest_lr=True)``.
* ``"valley"``, ``"steep"``, ``"minimum"``, ``"slide"``: fastai's
  ``Learner.lr_find`` suggestion functions (fastai >= 2.5), including the
  points ``lr_find`` trims before calling them.

``"valley"`` fixes an indexing bug of fastai's version by default (see
:func:`suggest`); ``fastai_compat=True`` restores fastai's numbers exactly.

The curve is analysed as given: nothing here smooths it. Both references
analyse the exponentially smoothed loss they record, so pass the smoothed
curve (``RangeTestResult.smoothed``) to get their numbers.

A non-finite loss ends a curve. Both references trim the history they
recorded, then (fastai) cut it before its first NaN; where a curve's record
ends depends on why it turned non-finite: ``non_finite`` of :func:`suggest`
says which it was, and ``RangeTestResult.suggest`` works it out per lane.
"""

from __future__ import annotations

import bisect
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from clrjax import _numerics

# Every method needs at least this many points left after trimming.
_MIN_POINTS = 2


def _steepest(lrs: np.ndarray, losses: np.ndarray) -> float:
    """torch-lr-finder: the lr where ``np.gradient(losses)`` (per index) is lowest."""
    return float(lrs[np.argmin(np.gradient(losses))])


def _steep(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai ``steep``: left end of the steepest segment in ``log(lr)``."""
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    # 0/0 (no change between learning rates whose logs round to one value) is flat, not NaN.
    return float(lrs[np.argmin(np.where(np.isnan(slopes), 0.0, slopes))])


def _minimum(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai ``minimum``: a tenth of the lr with the lowest loss."""
    return float(lrs[np.argmin(losses)]) / 10


def _valley_index(losses: np.ndarray, fastai_compat: bool) -> int:
    """Index picked by fastai's ``valley`` (``fastai_compat``) or by the fixed rule."""
    # run[i]: length of the longest strictly decreasing subsequence ending at i,
    # by patience sorting in O(n log n): tails[k] is the largest possible last
    # loss of a decreasing subsequence of length k + 1 (kept negated, ascending).
    run = np.empty(losses.shape[0], dtype=np.int64)
    tails: list[float] = []
    for i, value in enumerate(-losses):
        k = bisect.bisect_left(tails, value)
        tails[k : k + 1] = [value]
        run[i] = k + 1
    end = int(np.argmax(run))  # first index reaching the longest run, as in fastai
    length = int(run[end])
    if fastai_compat:
        # fastai starts one point before the window (and stays at 0 when no run
        # is longer than one point); the start is -1 when the run begins at 0.
        start = end - length if length > 1 else 0
        sections = (end - start) / 3
    else:
        start = end - length + 1
        sections = length / 3
    return start + int(sections) + int(sections / 2)


def _valley(lrs: np.ndarray, losses: np.ndarray, fastai_compat: bool = False) -> float:
    """fastai ``valley``: a point in the first half of the longest valley."""
    # In compat mode the index may be -1: like fastai, it wraps to the last lr.
    return float(lrs[_valley_index(losses, fastai_compat)])


def _slide(
    lrs: np.ndarray,
    losses: np.ndarray,
    lr_diff: int = 15,
    thresh: float = 0.005,
    adjust_value: float = 1.0,
) -> float:
    """fastai ``slide``: slide a window of ``lr_diff`` points leftwards from the end."""
    top = losses.shape[0] - 1 - lr_diff
    if top < 0:
        return float("nan")
    grad = np.gradient(losses)
    # Window [left, left + lr_diff] moves left while the gradients at its two
    # ends differ by more than thresh; the pick is the last left end visited.
    differs = np.abs(grad[lr_diff : top + 1 + lr_diff] - grad[: top + 1]) > thresh
    settled = np.flatnonzero(~differs)
    pick = min(settled[-1] + 1, top) if settled.size else 0
    return float(lrs[pick]) * adjust_value


class _Method(NamedTuple):
    rule: Callable[..., float]  # (lrs, losses, **options) -> suggested lr
    skip_start: Callable[[int], int]  # default points trimmed at the start, from num_steps

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(inspect.signature(self.rule).parameters)[2:]


def _fastai_skip_start(num_steps: int) -> int:
    return num_steps // 10


_METHODS: dict[str, _Method] = {
    "valley": _Method(_valley, _fastai_skip_start),
    "steep": _Method(_steep, _fastai_skip_start),
    "minimum": _Method(_minimum, _fastai_skip_start),
    "slide": _Method(_slide, _fastai_skip_start),
    "steepest": _Method(_steepest, lambda num_steps: 10),
}

#: The names :func:`clrjax.suggest` accepts as ``method`` (docs/suggestions.md describes each).
SUGGESTION_METHODS: tuple[str, ...] = tuple(_METHODS)
# The default: fastai's "minimum" (a tenth of the LR of the lowest loss) paid off on
# every task measured, "valley" (fastai's default) did not (docs/suggestions.md).
DEFAULT_METHOD = "minimum"


def _check_skip(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _check_options(method: str, options: dict[str, Any]) -> None:
    allowed = _METHODS[method].options
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"method {method!r} takes no option(s) {unknown}; its options are {list(allowed)}"
        )
    if "fastai_compat" in options and not isinstance(options["fastai_compat"], bool):
        raise TypeError(f"fastai_compat must be a bool, got {options['fastai_compat']!r}")
    if "lr_diff" in options:
        lr_diff = options["lr_diff"]
        if isinstance(lr_diff, bool) or not isinstance(lr_diff, (int, np.integer)) or lr_diff < 1:
            raise ValueError(f"lr_diff must be an integer >= 1, got {lr_diff!r}")
    if "thresh" in options:
        _numerics.check_non_negative("thresh", options["thresh"])
    if "adjust_value" in options:
        _numerics.check_positive("adjust_value", options["adjust_value"])


NON_FINITE_CONVENTIONS: tuple[str, ...] = ("stopped", "recorded")


def first_non_finite(losses: np.ndarray) -> np.ndarray:
    """Per curve of ``(..., steps)`` losses: the first non-finite step, or ``steps``."""
    bad = ~np.isfinite(losses)
    end = np.ones((*bad.shape[:-1], 1), dtype=bool)  # a sentinel: "steps" when none is bad
    return np.concatenate([bad, end], axis=-1).argmax(axis=-1)


def check_curves(lrs: ArrayLike, losses: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    lrs = np.asarray(lrs, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if lrs.ndim != 1:
        raise ValueError(f"lrs must be 1-D (steps,), got shape {lrs.shape}")
    if losses.ndim not in (1, 2) or losses.shape[-1] != lrs.shape[0]:
        raise ValueError(
            f"losses must have shape (steps,) or (lanes, steps) with steps = len(lrs) = "
            f"{lrs.shape[0]}, got shape {losses.shape}"
        )
    if not np.all(np.isfinite(lrs) & (lrs > 0)):
        raise ValueError(f"lrs must be finite and > 0, got {lrs!r}")
    if np.any(np.diff(lrs) <= 0):
        raise ValueError(f"lrs must be strictly increasing, got {lrs!r}")
    return lrs, losses


def suggest(
    lrs: ArrayLike,
    losses: ArrayLike,
    method: str = DEFAULT_METHOD,
    *,
    skip_start: int | None = None,
    skip_end: int = 5,
    non_finite: str = "stopped",
    **options: Any,
) -> float | np.ndarray:
    r"""Suggests a learning rate from an LR range-test curve.

    Like the reference implementations, each curve's *record* (the losses the
    test recorded, :math:`m` points) is trimmed to
    ``[skip_start : m - skip_end]`` and then cut before its first non-finite
    loss. ``non_finite`` says what the record of a curve holding a NaN/inf is:

    * ``"stopped"`` (default): the test stopped before its first non-finite
      value; what follows it is padding (clrjax's lanes after a divergence
      threshold stopped them). The record is the finite prefix.
    * ``"recorded"``: the non-finite values are losses the test recorded, as
      fastai and torch-lr-finder do when the loss turns NaN (they keep going).
      The record is the whole curve, so ``skip_end`` trims from its end before
      the cut, as fastai's ``lr_find`` does. Also right for a reference's
      history that ends with an inf (both stop after recording it).

    :meth:`RangeTestResult.suggest` picks the right record for each lane from
    why it diverged. The method then reads the remaining points
    :math:`(\eta_i, L_i)`, :math:`i = 0..n-1`:

    * ``"valley"`` (fastai's default): :math:`r_i` is the length of the longest
      strictly decreasing subsequence of :math:`L` ending at :math:`i`;
      :math:`e = \arg\max_i r_i` (first), :math:`r = r_e`, the valley is the
      :math:`r` points ending at :math:`e`, starting at :math:`s = e - r + 1`,
      and the pick is :math:`s + \lfloor r/3 \rfloor + \lfloor r/6 \rfloor`.
      fastai starts one point earlier (:math:`s = e - r`), which gives ``-1`` --
      Python's *last* point, the largest learning rate -- when the first step
      goes down and no decreasing subsequence is longer than 2 (a curve that
      dips once, then only rises). ``fastai_compat=True`` reproduces fastai bug and all.
    * ``"steep"`` (fastai): :math:`\eta_k` with
      :math:`k = \arg\min_i (L_{i+1} - L_i) / (\log\eta_{i+1} - \log\eta_i)`.
    * ``"minimum"`` (fastai): :math:`\eta_{\arg\min L} / 10`.
    * ``"slide"`` (fastai): with :math:`g` = ``np.gradient(L)`` (per index), a
      window :math:`[l, l + \text{lr\_diff}]` starts at the right end and moves
      left while :math:`|g_{l+\text{lr\_diff}} - g_l| > \text{thresh}`; returns
      the last left end visited times ``adjust_value``. ``thresh`` is in loss
      units per step, so it depends on the loss scale.
    * ``"steepest"`` (torch-lr-finder): :math:`\eta_k`,
      :math:`k = \arg\min` ``np.gradient(L)``. The gradient is taken per index,
      not per :math:`\log\eta`; on an exponential ramp the two have the same
      argmin, on a linear ramp they differ.

    Args:
      lrs: learning rates, shape ``(steps,)``, finite, > 0, strictly increasing.
      losses: losses, shape ``(steps,)`` or ``(lanes, steps)``; a non-finite
        value ends a curve (see ``non_finite``).
      method: one of :data:`SUGGESTION_METHODS`.
      skip_start: points trimmed from the start; ``None`` uses the reference's
        default: ``len(lrs) // 10`` for fastai's methods (``num_it // 10`` in
        ``lr_find``), 10 for ``"steepest"``.
      skip_end: points trimmed from the end of the record (both references
        use 5).
      non_finite: ``"stopped"`` or ``"recorded"``: what a curve's non-finite
        values are (above).
      **options: method options: ``fastai_compat=False`` (``"valley"``);
        ``lr_diff=15``, ``thresh=0.005``, ``adjust_value=1.0`` (``"slide"``).

    Returns:
      A float for 1-D ``losses``, else a ``(lanes,)`` float64 array. NaN where a
      curve has too few points after trimming: fewer than 2, or fewer than
      ``lr_diff + 1`` for ``"slide"``.

    Raises:
      ValueError: unknown ``method`` or ``non_finite``, bad shapes, ``lrs``
        not positive or not strictly increasing, negative skips.
      TypeError: an option the method does not take.

    Examples:
      >>> import numpy as np
      >>> import clrjax
      >>> lrs = np.geomspace(1e-5, 1.0, 41)
      >>> losses = 2.0 - np.tanh(4 * (np.log10(lrs) + 2.5)) + 10 * lrs**2
      >>> print(f"{clrjax.suggest(lrs, losses):.2e}")  # "minimum": a tenth of the lowest's LR
      2.37e-03
      >>> print(f"{clrjax.suggest(lrs, losses, 'valley'):.2e}")
      1.00e-03
      >>> print(f"{clrjax.suggest(lrs, losses, 'valley', fastai_compat=True):.2e}")
      7.50e-04
      >>> print(f"{clrjax.suggest(lrs, losses, 'steep', skip_start=0):.2e}")
      2.37e-03

      A lane stopped after 10 steps keeps too few points after trimming:

      >>> stopped = np.where(np.arange(41) < 10, losses, np.nan)
      >>> print(clrjax.suggest(lrs, np.stack([losses, stopped]), "minimum"))
      [0.00237137        nan]

      NaN from step 30 on: as padding after a stop, the record is steps 0-29
      and steps 4-24 remain; as recorded NaN losses (fastai's history when the
      loss turned NaN), the last 5 of the 41 recorded steps go, then the NaN
      ones, and steps 4-29 remain, which include the minimum at step 27:

      >>> nan_at_30 = np.where(np.arange(41) < 30, losses, np.nan)
      >>> print(f"{clrjax.suggest(lrs, nan_at_30, 'minimum'):.2e}")
      1.00e-03
      >>> print(f"{clrjax.suggest(lrs, nan_at_30, 'minimum', non_finite='recorded'):.2e}")
      2.37e-03
    """
    _numerics.check_choice("non_finite", non_finite, NON_FINITE_CONVENTIONS)
    lrs, losses = check_curves(lrs, losses)
    rows = np.atleast_2d(losses)
    if non_finite == "stopped":
        recorded = first_non_finite(rows)
    else:
        recorded = np.full(rows.shape[0], lrs.shape[0])
    values = suggest_recorded(
        lrs, rows, recorded, method, skip_start=skip_start, skip_end=skip_end, **options
    )
    return float(values[0]) if losses.ndim == 1 else values


def suggest_recorded(
    lrs: np.ndarray,
    losses: np.ndarray,
    recorded: np.ndarray,
    method: str,
    *,
    skip_start: int | None = None,
    skip_end: int = 5,
    **options: Any,
) -> np.ndarray:
    """:func:`suggest` on checked ``(lanes, steps)`` curves whose records are known.

    ``recorded[i]`` is how many steps the test recorded for curve ``i``: its
    record is ``losses[i, :recorded[i]]``, trimmed, then cut before its first
    non-finite value. Returns a ``(lanes,)`` float64 array.
    """
    _numerics.check_choice("method", method, SUGGESTION_METHODS)
    _check_options(method, options)
    rule, default_skip_start = _METHODS[method]
    start = default_skip_start(lrs.shape[0]) if skip_start is None else skip_start
    start = _check_skip("skip_start", start)
    end = _check_skip("skip_end", skip_end)

    def one_curve(curve: np.ndarray, length: int) -> float:
        stop = start + int(first_non_finite(curve[start : max(length - end, start)]))
        if stop - start < _MIN_POINTS:
            return float("nan")
        # Differences of huge finite losses (near the float64 maximum) overflow to
        # +-inf, which still ranks them as the steepest or the flattest; so does a
        # step between two learning rates too close for their logs to differ.
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            return rule(lrs[start:stop], curve[start:stop], **options)

    values = [one_curve(curve, length) for curve, length in zip(losses, recorded, strict=True)]
    return np.array(values, dtype=np.float64)


class SuggestionSpread(NamedTuple):
    r"""How much one suggestion method's pick varies across curves (e.g. seeds).

    Returned by :func:`suggest_spread` and, per grid configuration, by
    ``RangeTestResult.suggest_spread``. Only curves that gave a suggestion
    count; when none did, ``count`` is 0 and the three learning rates are NaN.

    Attributes:
      median: median suggestion in log space, :math:`\exp(\operatorname{median}
        \log \eta_i)` (the geometric mean of the two middle values for an
        even count).
      low: smallest suggestion.
      high: largest suggestion.
      count: number of curves that gave a suggestion.

    Examples:
      >>> import clrjax
      >>> spread = clrjax.suggest_spread([1e-3, 1e-2, 1e-1], [[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]],
      ...                                "minimum", skip_start=0, skip_end=0)
      >>> spread
      SuggestionSpread(median=0.001, low=0.0001, high=0.01, count=2)
      >>> print(f"high/low: {spread.high / spread.low:g}")
      high/low: 100
    """

    median: float
    low: float
    high: float
    count: int


def spread_of(values: np.ndarray) -> SuggestionSpread:
    """The :class:`SuggestionSpread` of suggestions (NaN: none)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        nan = float("nan")
        return SuggestionSpread(nan, nan, nan, 0)
    low, high = float(values.min()), float(values.max())
    # exp(log(x)) can land an ulp outside [low, high].
    median = float(np.clip(np.exp(np.median(np.log(values))), low, high))
    return SuggestionSpread(median, low, high, int(values.size))


def suggest_spread(
    lrs: ArrayLike, losses: ArrayLike, method: str = DEFAULT_METHOD, **kwargs: Any
) -> SuggestionSpread:
    r"""Summarises one suggestion over several curves (e.g. seed lanes).

    Calls :func:`suggest` on each row of ``losses`` and returns the median, min
    and max of the finite suggestions in log space: the median is
    :math:`\exp(\operatorname{median}_i \log \eta_i)` (a geometric mean of the
    two middle values for an even count). All fields are NaN (``count`` 0)
    when no curve gives a suggestion.

    Args:
      lrs: learning rates, shape ``(steps,)``.
      losses: losses, shape ``(lanes, steps)`` (1-D is one lane).
      method: one of :data:`SUGGESTION_METHODS`.
      **kwargs: passed to :func:`suggest` (``skip_start``, ``skip_end``,
        ``non_finite``, method options).

    Returns:
      ``SuggestionSpread(median, low, high, count)``; ``count`` is the number of
      lanes that gave a suggestion.

    Examples:
      >>> import numpy as np
      >>> import clrjax
      >>> lrs = np.geomspace(1e-4, 1.0, 9)
      >>> seeds = [(lrs - m) ** 2 for m in (1e-3, 1e-2, 1e-1)]
      >>> spread = clrjax.suggest_spread(lrs, seeds, "minimum", skip_start=0, skip_end=0)
      >>> print(spread.median, spread.low, spread.high, spread.count)
      0.001 0.0001 0.01 3
    """
    return spread_of(np.atleast_1d(suggest(lrs, np.atleast_2d(losses), method, **kwargs)))
