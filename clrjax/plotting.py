"""Plots for LR range tests and schedules (matplotlib is imported lazily).

Every function takes an optional matplotlib ``Axes`` (or creates a figure with
``matplotlib.pyplot``) and returns what it drew on, so plots compose with your
own figures. Importing :mod:`clrjax.plotting` does not import matplotlib; the
first plot does, and raises ``ImportError`` naming the ``plot`` extra
(``pip install 'clrjax[plot]'``) when it is missing.

Artists carry a ``gid`` so they can be found again
(``[l for l in ax.lines if l.get_gid() == "clrjax-smoothed"]``):

=====================  ===================================================
gid                    artist
=====================  ===================================================
``clrjax-smoothed``    smoothed loss of one lane
``clrjax-raw``         raw per-step losses of one lane (faint points)
``clrjax-val``         validation losses of one lane (dashed)
``clrjax-suggestion``  suggested learning rates of one method (markers)
``clrjax-raw-min``     the lowest raw loss of each lane (stars)
``clrjax-diverged``    the step at which each diverged lane stopped
``clrjax-lr``          a learning-rate schedule
``clrjax-momentum``    a momentum schedule (on a twin y-axis)
``clrjax-candidate``   the candidate peaks of a schedule race (ticks)
``clrjax-winner``      the race's winner (its peak, its scores)
``clrjax-race``        one candidate's scores across the race's rungs
=====================  ===================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clrjax._suggest import DEFAULT_METHOD, SUGGESTION_METHODS

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from clrjax._result import RangeTestResult
    from clrjax._schedule_choice import ScheduleChoice

__all__ = ["plot_range_test", "plot_range_test_grid", "plot_schedule", "plot_schedule_choice"]

# Marker of the i-th suggestion method drawn on one plot ("*" marks raw minima,
# "X" divergences).
_SUGGESTION_MARKERS = ("o", "v", "s", "D", "^", "P", "h")
# Part of the sequential colormap used for one numeric axis (avoids the
# faint yellow end of viridis).
_CMAP_RANGE = (0.0, 0.85)
# The automatic y-limit stops at the first smoothed loss plus this fraction of
# the drop from it to the lowest smoothed loss.
_YLIM_HEADROOM = 0.5
# Line styles telling apart the values of a second hyperparameter.
_LINESTYLES = ("-", "--", ":", "-.")
# Fraction of the data range added above schedule curves per legend row.
_LEGEND_BAND = 0.3
# Two curves closer than this fraction of the y-range hide each other (a line
# is about 0.6% of the height of a default figure's Axes).
_OVERLAP_TOL = 0.01
# A curve lying on another entry's for at least this fraction of its points
# gets dots along it, staggered between such curves.
_OVERLAP_MIN = 0.5
# About how many dots such a curve gets.
_DOTS_PER_CURVE = 10
# A legend=True legend with more entries than this goes outside the Axes.
_LEGEND_INSIDE_MAX = 5
# Gap (inches) between the plot and a legend outside it.
_LEGEND_PAD = 0.15


def _pyplot():
    """Imports ``matplotlib.pyplot``, naming the ``plot`` extra when it is missing."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("clrjax.plotting needs matplotlib: pip install 'clrjax[plot]'") from e
    return plt


def _format_value(value: Any) -> str:
    """Formats a hyperparameter value compactly: ``1e-4``, ``0.9``, ``0``, ``3``.

    Examples:
      >>> from clrjax.plotting import _format_value
      >>> print([_format_value(v) for v in (1e-3, 1e-5, 0.0, 0.9, 3, 2.5e-4, 128.0)])
      ['1e-3', '1e-5', '0', '0.9', '3', '2.5e-4', '128']
    """
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if value == 0 or not np.isfinite(value) or 1e-2 <= abs(value) < 1e5:
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _lane_indices(result: RangeTestResult, lanes: Any) -> np.ndarray:
    """Normalises ``lanes`` (None, an int, indices or a boolean mask) to indices."""
    num_lanes = np.shape(result.losses)[0]
    if lanes is None:
        return np.arange(num_lanes)
    idx = np.atleast_1d(np.asarray(lanes))
    if idx.dtype == bool:
        if idx.shape != (num_lanes,):
            raise ValueError(
                f"lanes as a boolean mask must have shape ({num_lanes},); got {idx.shape}"
            )
        return np.flatnonzero(idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"lanes must be lane indices or a boolean mask; got {lanes!r}")
    if idx.size == 0 or np.any((idx < -num_lanes) | (idx >= num_lanes)):
        raise ValueError(f"lanes must be indices in [0, {num_lanes}); got {lanes!r}")
    return idx % num_lanes


def _varying_names(result: RangeTestResult, idx: np.ndarray) -> tuple[str, ...]:
    """Hyperparameter names whose value differs between the lanes ``idx``."""
    names = list(result.grid_names) + [n for n in result.hparams if n not in result.grid_names]
    return tuple(n for n in names if len(np.unique(np.asarray(result.hparams[n])[idx])) > 1)


def _default_label_by(result: RangeTestResult, idx: np.ndarray) -> tuple[str, ...]:
    """The varying hyperparameters, leaving out ``seed`` when something else varies."""
    varying = _varying_names(result, idx)
    without_seed = tuple(n for n in varying if n != "seed")
    return without_seed or varying


def _palette(values: list, numeric: bool, cmap: Any) -> dict:
    """One colour per value: a sequential colormap in value order when
    ``numeric`` (or a ``cmap`` is given), else the qualitative ``tab10`` cycle."""
    if len(values) > 1 and (numeric or cmap is not None):
        colormap = _pyplot().get_cmap("viridis") if cmap is None else cmap
        ordered = sorted(values) if numeric else values
        positions = np.linspace(*_CMAP_RANGE, len(ordered))
        return {v: colormap(p) for v, p in zip(ordered, positions, strict=True)}
    return {v: f"C{k % 10}" for k, v in enumerate(values)}


def _is_numeric_axis(name: str, values: list) -> bool:
    """A hyperparameter whose values are ordered quantities (seeds are not)."""
    return name != "seed" and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    )


def _group_styles(
    result: RangeTestResult,
    idx: np.ndarray,
    label_by: tuple[str, ...],
    cmap: Any,
    linestyles: bool,
) -> tuple[list[tuple], dict[tuple, tuple[Any, str]]]:
    """Lanes' group keys (their ``label_by`` values) and a (colour, linestyle) per group.

    With two ``label_by`` names (and ``linestyles``), the first picks the
    colour and the second, when it has at most four values, the line style;
    otherwise every group gets its own colour and solid lines.
    """
    keys = [tuple(np.asarray(result.hparams[n])[i].item() for n in label_by) for i in idx]
    groups = list(dict.fromkeys(keys))
    if len(label_by) == 1:
        values = [g[0] for g in groups]
        colours = _palette(values, _is_numeric_axis(label_by[0], values), cmap)
        return keys, {g: (colours[g[0]], "-") for g in groups}
    if linestyles and len(label_by) == 2:
        firsts = list(dict.fromkeys(g[0] for g in groups))
        seconds = list(dict.fromkeys(g[1] for g in groups))
        if len(seconds) <= len(_LINESTYLES):
            colours = _palette(firsts, _is_numeric_axis(label_by[0], firsts), cmap)
            styles = dict(zip(seconds, _LINESTYLES, strict=False))
            return keys, {g: (colours[g[0]], styles[g[1]]) for g in groups}
    colours = _palette(groups, False, cmap)
    return keys, {g: (colours[g], "-") for g in groups}


def _auto_ylim(curves: np.ndarray, floor: float | None = None) -> tuple[float, float] | None:
    """The y-range of smoothed curves with the exploding tail cut off.

    From the lowest smoothed loss ``lo`` (or ``floor``, the lowest raw loss,
    when lower) up to ``min(highest, start + 0.5 (start - lo))``, where
    ``start`` is the largest first finite smoothed loss of a lane, plus 5%
    padding. None when there is no finite value or the range is empty.
    """
    curves = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    finite = np.isfinite(curves)
    if not finite.any():
        return None
    lo, hi = np.min(curves[finite]), np.max(curves[finite])
    rows = finite.any(axis=1)
    first = curves[rows, np.argmax(finite[rows], axis=1)]
    start = np.max(first)
    top = min(hi, start + _YLIM_HEADROOM * (start - lo))
    bottom = lo if floor is None else min(lo, floor)
    span = top - bottom
    if not span > 0:
        return None
    return float(bottom - 0.05 * span), float(top + 0.05 * span)


def _data_range(curves: np.ndarray, floor: float | None) -> tuple[float, float] | None:
    """From the lowest finite value of ``curves`` (or ``floor``) to the highest; None if empty."""
    finite = curves[np.isfinite(curves)]
    if not finite.size:
        return None
    bottom, top = finite.min(), finite.max()
    bottom = bottom if floor is None else min(bottom, floor)
    return (float(bottom), float(top)) if top > bottom else None


def _window(num_steps: int, skip_start: int, skip_end: int) -> slice:
    for name, value in (("skip_start", skip_start), ("skip_end", skip_end)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int; got {value!r}")
    if skip_start + skip_end >= num_steps:
        raise ValueError(
            f"skip_start + skip_end must be < the number of steps ({num_steps}); "
            f"got {skip_start} + {skip_end}"
        )
    return slice(skip_start, num_steps - skip_end)


def _value_at_lr(lrs: np.ndarray, curve: np.ndarray, lr: float) -> float:
    """The curve at the step whose learning rate is nearest ``lr`` (in log space if > 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if lr > 0 and np.all(lrs > 0):
            step = np.argmin(np.abs(np.log(lrs) - np.log(lr)))
        else:
            step = np.argmin(np.abs(lrs - lr))
    return float(curve[step])


def _last_finite(curve: np.ndarray, upto: int) -> float:
    """Last finite value of ``curve[: upto + 1]``, or NaN."""
    head = curve[: upto + 1]
    finite = np.flatnonzero(np.isfinite(head))
    return float(head[finite[-1]]) if finite.size else float("nan")


class _Entry(NamedTuple):
    """One legend entry of a range-test plot: lanes drawn alike."""

    label: str  # "" when nothing varies (no legend entry)
    colour: Any
    linestyle: str
    markevery: tuple[int, int] | None  # dots along the curves, or None


def _entry_label(label_by: tuple[str, ...], keys: list[tuple]) -> str:
    """Legend label of lanes with the ``label_by`` values ``keys`` (several when identical).

    Examples:
      >>> from clrjax.plotting import _entry_label
      >>> print(_entry_label(("wd", "m"), [(0.0, 0.9)]))
      wd=0, m=0.9
      >>> print(_entry_label(("wd", "m"), [(0.0, 0.9), (1e-9, 0.9)]))
      wd={0, 1e-9}, m=0.9 (identical)
      >>> print(_entry_label(("wd", "m"), [(0.0, 0.9), (1e-9, 0.8)]))
      wd=0, m=0.9; wd=1e-9, m=0.8 (identical)
    """
    if len(keys) == 1:
        return ", ".join(f"{n}={_format_value(v)}" for n, v in zip(label_by, keys[0], strict=True))
    values = [list(dict.fromkeys(column)) for column in zip(*keys, strict=True)]
    if len(keys) == math.prod(len(v) for v in values):  # every combination of the values
        parts = [
            f"{n}={_format_value(v[0])}"
            if len(v) == 1
            else f"{n}={{{', '.join(map(_format_value, v))}}}"
            for n, v in zip(label_by, values, strict=True)
        ]
        return ", ".join(parts) + " (identical)"
    return "; ".join(_entry_label(label_by, [key]) for key in keys) + " (identical)"


def _visible(curves: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """The curves as a plot with y-range ``limits`` shows them: clipped to it,
    NaN (after a divergence) above the top."""
    return np.clip(np.where(np.isnan(curves), np.inf, curves), *limits)


def _staggered_dots(curves: np.ndarray, tol: float) -> list[tuple[int, int] | None]:
    """``markevery`` of each visible curve: dots for the curves lying on another
    for at least ``_OVERLAP_MIN`` of their points, at steps staggered so each shows."""
    num_curves, num_points = curves.shape
    on_another = np.zeros(num_curves, dtype=bool)
    for i in range(num_curves):
        close = np.mean(np.abs(curves - curves[i]) <= tol, axis=1)
        close[i] = 0.0
        on_another[i] = close.max() >= _OVERLAP_MIN
    count = int(on_another.sum())
    period = max(count, num_points // _DOTS_PER_CURVE, 1)
    ranks = np.cumsum(on_another) - 1
    return [
        (int(rank) * period // count, period) if dotted else None
        for dotted, rank in zip(on_another, ranks, strict=True)
    ]


def _legend_entries(
    result: RangeTestResult,
    idx: np.ndarray,
    label_by: tuple[str, ...],
    cmap: Any,
    linestyles: bool,
    curves: np.ndarray,
    limits: tuple[float, float] | None,
) -> tuple[list[_Entry], list[int]]:
    """The legend entries of the lanes ``idx`` and the entry of each.

    Lanes with equal ``label_by`` values share an entry, and so do such groups
    whose ``curves`` (the smoothed losses drawn, one row per lane) coincide
    within ``_OVERLAP_TOL`` of the y-range ``limits`` wherever visible: they
    are drawn alike under one label ending in ``(identical)``. Entries whose
    curves lie on another's for at least ``_OVERLAP_MIN`` of their points get
    dots along them (see :func:`_staggered_dots`). No merging nor dots when
    ``limits`` is None (nothing finite to compare).
    """
    keys, styles = _group_styles(result, idx, label_by, cmap, linestyles)
    rows_of: dict[tuple, list[int]] = {}
    for row, key in enumerate(keys):
        rows_of.setdefault(key, []).append(row)
    groups: list[list[tuple]] = []
    if limits is None:
        groups = [[key] for key in rows_of]
        dots: list[tuple[int, int] | None] = [None] * len(groups)
    else:
        visible = _visible(curves, limits)
        tol = _OVERLAP_TOL * (limits[1] - limits[0])
        for key, rows in rows_of.items():
            for group in groups:
                other = rows_of[group[0]]
                if len(other) == len(rows) and np.all(
                    np.abs(visible[other] - visible[rows]) <= tol
                ):
                    group.append(key)
                    break
            else:
                groups.append([key])
        dots = _staggered_dots(visible[[rows_of[group[0]][0] for group in groups]], tol)
    entries, entry_of = [], [0] * len(keys)
    for e, (group, markevery) in enumerate(zip(groups, dots, strict=True)):
        colour, linestyle = styles[group[0]]
        entries.append(_Entry(_entry_label(label_by, group), colour, linestyle, markevery))
        for key in group:
            for row in rows_of[key]:
                entry_of[row] = e
    return entries, entry_of


def _check_suggest(suggest: str | Sequence[str] | None) -> tuple[str, ...]:
    """``suggest`` as a tuple of method names (empty for None)."""
    if suggest is None:
        return ()
    if not isinstance(suggest, (str, Iterable)):
        raise TypeError(
            f"suggest must be a method name, a sequence of them or None; got {suggest!r}"
        )
    methods = (suggest,) if isinstance(suggest, str) else tuple(suggest)
    for method in methods:
        if not isinstance(method, str) or method not in SUGGESTION_METHODS:
            raise ValueError(
                f"suggest must name methods in {SUGGESTION_METHODS} (or be None); got {suggest!r}"
            )
    return methods


def _check_ylim(ylim: Any) -> tuple[float, float] | str | None:
    """``ylim`` as ``"auto"``, None or a pair of distinct finite floats."""
    if ylim is None or (isinstance(ylim, str) and ylim == "auto"):
        return ylim
    message = (
        f"ylim must be 'auto', None or (bottom, top), two different finite numbers; got {ylim!r}"
    )
    if isinstance(ylim, str):
        raise ValueError(message)
    try:
        limits = np.asarray(ylim, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(message) from e
    if limits.shape != (2,) or not np.all(np.isfinite(limits)) or limits[0] == limits[1]:
        raise ValueError(message)
    return float(limits[0]), float(limits[1])


def _check_cmap(cmap: Any) -> Any:
    """``cmap`` as a matplotlib ``Colormap`` (None stays None)."""
    if cmap is None:
        return None
    try:
        return _pyplot().get_cmap(cmap)
    except (TypeError, ValueError) as e:
        raise ValueError(f"cmap must be a matplotlib colormap or its name; got {cmap!r}") from e


def _check_label_by(
    result: RangeTestResult, idx: np.ndarray, label_by: str | Sequence[str] | None
) -> tuple[str, ...]:
    if label_by is None:
        return _default_label_by(result, idx)
    if not isinstance(label_by, (str, Iterable)):
        raise TypeError(f"label_by must be a name, a sequence of names or None; got {label_by!r}")
    label_by = (label_by,) if isinstance(label_by, str) else tuple(label_by)
    for name in label_by:
        if not isinstance(name, str) or name not in result.hparams:
            raise ValueError(
                f"label_by names a hyperparameter the result lacks: {name!r}; "
                f"it has {tuple(result.hparams)}"
            )
    return label_by


def _raw_floor(raw: np.ndarray, shown: bool) -> float | None:
    """The lowest finite raw loss when raw losses are ``shown``, else None."""
    finite = raw[np.isfinite(raw)]
    return float(finite.min()) if shown and finite.size else None


def _markers(
    ax: Axes,
    points: list[tuple[float, float, Any]],
    *,
    marker: str,
    size: float,
    zorder: int,
    gid: str,
    label: str,
) -> Any:
    """Draws ``(x, y, colour)`` points as black-edged markers; returns their legend handle."""
    from matplotlib.lines import Line2D

    if points:
        xs, ys, cs = zip(*points, strict=True)
        ax.scatter(
            xs,
            ys,
            s=size,
            marker=marker,
            c=list(cs),
            edgecolors="black",
            linewidths=0.9,
            zorder=zorder,
            clip_on=False,  # y is clamped to the y-range: edge markers show whole
            gid=gid,
            label=label,
        )
    return Line2D(
        [],
        [],
        linestyle="none",
        marker=marker,
        markersize=np.sqrt(size),
        markerfacecolor="white",
        markeredgecolor="black",
        label=label,
    )


def _draw_range_test(
    result: RangeTestResult,
    ax: Axes | None,
    *,
    lanes: Any,
    suggest: str | Sequence[str] | None,
    skip_start: int,
    skip_end: int,
    show_raw: bool,
    show_min: bool,
    show_val: bool,
    label_by: str | Sequence[str] | None,
    log_lr: bool,
    ylim: tuple[float, float] | str | None,
    cmap: Any,
) -> tuple[Axes, list[Any], list[Any]]:
    """:func:`plot_range_test` without title and legend; returns the Axes and
    the legend handles of the lanes and of the rest."""
    from matplotlib.lines import Line2D

    idx = _lane_indices(result, lanes)
    lrs = np.asarray(result.lrs, dtype=np.float64)
    smoothed = np.asarray(result.smoothed, dtype=np.float64)
    raw = np.asarray(result.losses, dtype=np.float64)
    window = _window(lrs.shape[0], skip_start, skip_end)
    methods = _check_suggest(suggest)
    label_by = _check_label_by(result, idx, label_by)
    ylim = _check_ylim(ylim)
    cmap = _check_cmap(cmap)
    if ax is None:
        _, ax = _pyplot().subplots()

    window_lrs, curves, raw_curves = lrs[window], smoothed[idx, window], raw[idx, window]
    floor = _raw_floor(raw_curves, show_raw or show_min)
    if isinstance(ylim, str):
        ylim = _auto_ylim(curves, floor)
    has_val = show_val and result.val_steps is not None and result.val_losses is not None
    # Validation curves are dashed, so line styles only encode a hyperparameter without them.
    entries, entry_of = _legend_entries(
        result,
        idx,
        label_by,
        cmap,
        not has_val,
        curves,
        tuple(sorted(ylim)) if ylim is not None else _data_range(curves, floor),
    )
    colours = [entries[e].colour for e in entry_of]
    lane_handles = {}
    for row, e in enumerate(entry_of):
        entry = entries[e]
        if show_raw:
            ax.plot(
                window_lrs,
                raw_curves[row],
                linestyle="none",
                marker=".",
                markersize=2,
                alpha=0.25,
                color=entry.colour,
                gid="clrjax-raw",
                label="_nolegend_",
            )
        (line,) = ax.plot(
            window_lrs,
            curves[row],
            color=entry.colour,
            linestyle=entry.linestyle,
            linewidth=1.6,
            marker="o" if entry.markevery else None,
            markersize=4,
            markevery=entry.markevery,
            gid="clrjax-smoothed",
            label=entry.label or "_nolegend_",
        )
        if entry.label:
            lane_handles.setdefault(e, line)
    handles = []

    if has_val:
        val_steps = np.asarray(result.val_steps)
        keep = (val_steps >= window.start) & (val_steps < window.stop)
        val_losses = np.asarray(result.val_losses, dtype=np.float64)
        for lane, colour in zip(idx, colours, strict=True):
            ax.plot(
                lrs[val_steps[keep]],
                val_losses[lane, keep],
                linestyle="--",
                marker=".",
                markersize=4,
                color=colour,
                gid="clrjax-val",
                label="_nolegend_",
            )
        if keep.any():
            handles.append(Line2D([], [], linestyle="--", color="gray", label="validation"))

    if log_lr:
        ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    if ylim is not None:
        ax.set_ylim(*ylim)
    bottom, top = ax.get_ylim()

    for k, method in enumerate(methods):
        picks = np.asarray(result.suggest(method), dtype=np.float64)[idx]
        points = []
        for row, lr in enumerate(picks):
            if np.isfinite(lr) and window_lrs.min() <= lr <= window_lrs.max():
                y = _value_at_lr(window_lrs, curves[row], lr)
                if np.isfinite(y):
                    points.append((lr, float(np.clip(y, bottom, top)), colours[row]))
        marker = _SUGGESTION_MARKERS[k % len(_SUGGESTION_MARKERS)]
        handles.append(
            _markers(
                ax,
                points,
                marker=marker,
                size=55,
                zorder=4,
                gid="clrjax-suggestion",
                label=f"suggested ({method})",
            )
        )

    if show_min:
        points = []
        for row in range(len(idx)):
            finite = np.isfinite(raw_curves[row])
            if finite.any():
                step = int(np.argmin(np.where(finite, raw_curves[row], np.inf)))
                y = float(np.clip(raw_curves[row, step], bottom, top))
                points.append((window_lrs[step], y, colours[row]))
        if points:
            handles.append(
                _markers(
                    ax,
                    points,
                    marker="*",
                    size=130,
                    zorder=4,
                    gid="clrjax-raw-min",
                    label="raw minimum",
                )
            )

    points = []
    for row, lane in enumerate(idx):
        step = int(np.asarray(result.diverged_at)[lane])
        if window.start <= step < window.stop:
            y = np.nan_to_num(_last_finite(smoothed[lane], step), nan=top)  # none: at the top
            points.append((lrs[step], float(np.clip(y, bottom, top)), colours[row]))
    if points:
        handles.append(
            _markers(
                ax, points, marker="X", size=70, zorder=5, gid="clrjax-diverged", label="diverged"
            )
        )
    return ax, list(lane_handles.values()), handles


def _legend_placement(legend: Any) -> str | None:
    """``legend`` as ``"auto"``, ``"inside"``, ``"outside"`` or None (no legend)."""
    if isinstance(legend, (bool, np.bool_)):
        return "auto" if legend else None
    if legend in ("inside", "outside"):
        return legend
    raise ValueError(f"legend must be True, False, 'inside' or 'outside'; got {legend!r}")


def _widen(fig: Figure, legend: Any) -> float:
    """Widens ``fig`` by the width of ``legend``; returns old width / new width."""
    old = fig.get_figwidth()
    new = old + legend.get_window_extent().width / fig.dpi + _LEGEND_PAD
    fig.set_size_inches(new, fig.get_figheight())
    return old / new


def plot_range_test(
    result: RangeTestResult,
    ax: Axes | None = None,
    *,
    lanes: Any = None,
    suggest: str | Sequence[str] | None = DEFAULT_METHOD,
    skip_start: int = 0,
    skip_end: int = 0,
    show_raw: bool = True,
    show_min: bool = True,
    show_val: bool = True,
    label_by: str | Sequence[str] | None = None,
    log_lr: bool = True,
    ylim: tuple[float, float] | str | None = "auto",
    cmap: Any = None,
    legend: bool | str = True,
    title: str | None = None,
) -> Axes:
    """Plots loss against learning rate for the lanes of a range test.

    Each lane's smoothed loss is a line over faint points of its raw loss; the
    lanes are coloured and labelled by the hyperparameters that differ between
    them (a sequential colormap when one numeric hyperparameter varies, such
    as Smith's weight-decay grid; with two, the first sets the colour and the
    second, up to four values, the line style, unless validation curves are
    drawn). Lanes with equal ``label_by`` values (by default the seeds of one
    configuration) share a colour and a legend entry.

    Lanes that would hide each other stay visible: groups of lanes whose
    curves coincide wherever they are visible (within 1% of the y-range, about
    a line's width) are drawn alike under one legend entry listing their values
    and ending in ``(identical)``, such as
    ``weight_decay={0, 1e-5}, momentum=0.9 (identical)``; curves lying on
    another entry's curve for half of their points or more carry dots, at
    steps staggered between those curves so that each colour shows.

    Markers (each in its lane's colour, explained in the legend): the
    learning rates :meth:`RangeTestResult.suggest` picks for each method, a
    star at each lane's lowest raw loss, and an ``X`` where each diverged lane
    stopped; validation losses, when recorded, are dashed lines at the
    learning rates of their steps. The legend goes outside the Axes, on the
    right, when it has more than five entries (a figure this function creates
    is widened to hold it); otherwise inside, where it covers the fewest points.

    The y-axis is cut where the loss explodes: with ``ylim="auto"`` it spans
    the lowest smoothed loss ``lo`` up to
    ``min(max smoothed, start + 0.5 * (start - lo))``, ``start`` being the
    highest first smoothed loss of a lane (so the informative descent fills the
    plot; fastai and torch-lr-finder instead trim the last steps, which
    ``skip_end`` also does here), extended down to the lowest raw loss when raw
    losses or their minima are drawn. Markers beyond the top sit on the top edge.

    Args:
      result: a :class:`clrjax.RangeTestResult`.
      ax: the Axes to draw on; by default a new figure's.
      lanes: which lanes to draw (indices or a boolean mask); all by default.
      suggest: a suggestion method name, a sequence of names, or None for no
        markers (see :data:`clrjax.SUGGESTION_METHODS`).
      skip_start: steps left out at the start of every curve.
      skip_end: steps left out at the end of every curve.
      show_raw: draw the raw per-step losses as faint points.
      show_min: mark each lane's lowest raw loss (in the drawn steps) with a star.
      show_val: draw validation losses when the result has them.
      label_by: hyperparameter name(s) that colour and label the lanes; by
        default the ones that vary between the drawn lanes (``seed`` left out
        when anything else varies).
      log_lr: logarithmic learning-rate axis.
      ylim: ``"auto"`` (the rule above), ``None`` (matplotlib's autoscaling) or
        ``(bottom, top)``.
      cmap: colormap (name or object) for the lanes; by default ``viridis``
        for one numeric hyperparameter (seeds excepted) and the ``tab10``
        cycle otherwise.
      legend: ``True`` (placed by the rule above), ``"inside"`` or
        ``"outside"`` the Axes, or ``False`` for none. A legend outside an
        Axes you pass may need ``savefig(..., bbox_inches="tight")``.
      title: the Axes title.

    Returns:
      The matplotlib Axes drawn on.

    Examples:
      >>> import numpy as np
      >>> from clrjax import RangeTestResult
      >>> from clrjax.plotting import plot_range_test
      >>> lrs = np.geomspace(1e-4, 1.0, 40)
      >>> curve = 2.3 - 0.5 * np.log10(lrs / 1e-4)
      >>> losses = np.stack([curve, curve - 0.1, curve - 0.1])
      >>> result = RangeTestResult(
      ...     lrs=lrs, losses=losses, smoothed=losses, diverged_at=np.array([-1, -1, -1]),
      ...     hparams={"weight_decay": np.array([1e-4, 1e-5, 0.0])},
      ...     grid_names=("weight_decay",))
      >>> ax = plot_range_test(result, suggest=["valley", "steepest"])
      >>> print([text.get_text() for text in ax.get_legend().get_texts()])
      ['weight_decay=1e-4', 'weight_decay={1e-5, 0} (identical)', 'suggested (valley)',
       'suggested (steepest)', 'raw minimum']
      >>> import matplotlib.pyplot as plt
      >>> plt.close(ax.figure)
    """
    placement = _legend_placement(legend)
    own_figure = ax is None
    ax, lane_handles, handles = _draw_range_test(
        result,
        ax,
        lanes=lanes,
        suggest=suggest,
        skip_start=skip_start,
        skip_end=skip_end,
        show_raw=show_raw,
        show_min=show_min,
        show_val=show_val,
        label_by=label_by,
        log_lr=log_lr,
        ylim=ylim,
        cmap=cmap,
    )
    if title is not None:
        ax.set_title(title)
    handles = lane_handles + handles
    if placement is None or not handles:
        return ax
    if placement == "auto":
        placement = "outside" if len(handles) > _LEGEND_INSIDE_MAX else "inside"
    if placement == "inside":
        ax.legend(handles=handles, fontsize="small", loc="best")
        return ax
    box = ax.legend(
        handles=handles,
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
    )
    if own_figure:  # keep the Axes' size: the figure grows by the legend
        fig = ax.figure
        scale = _widen(fig, box)
        if fig.get_layout_engine() is None:  # a layout engine makes room by itself
            left, right = fig.subplotpars.left, fig.subplotpars.right
            fig.subplots_adjust(left=left * scale, right=right * scale)
    return ax


def plot_range_test_grid(
    result: RangeTestResult,
    row: str | None = "weight_decay",
    col: str | None = "momentum",
    *,
    figsize: tuple[float, float] | None = None,
    sharey: bool = True,
    title: str | None = None,
    legend: bool | str = True,
    **kwargs: Any,
) -> Figure:
    """Small multiples of a range test: one panel per (``row``, ``col``) value pair.

    Each panel is :func:`plot_range_test` on the lanes with that pair of
    hyperparameter values (what else varies between them, seeds for instance,
    is coloured within the panel). ``None`` for ``row`` or ``col`` gives a
    single row (or column); a name the result's ``hparams`` lacks raises
    ``ValueError``. With ``sharey`` every panel uses one automatic y-range
    computed over all lanes.

    Args:
      result: a :class:`clrjax.RangeTestResult`.
      row: the hyperparameter varying down the rows, or None.
      col: the hyperparameter varying across the columns, or None.
      figsize: figure size in inches; by default 3.4 x 2.6 per panel (widened
        by the legend's width when it goes on the right).
      sharey: share the y-axis between panels.
      title: the figure's title (``suptitle``).
      legend: ``True`` or ``"outside"``: one legend for all panels, on the
        right of them; ``"inside"``: in the first panel; ``False``: none.
      **kwargs: passed on to :func:`plot_range_test` (not ``ax``, ``lanes``).

    Returns:
      The matplotlib Figure; ``fig.axes`` lists the panels row by row.

    Examples:
      >>> import numpy as np
      >>> from clrjax import RangeTestResult
      >>> from clrjax.plotting import plot_range_test_grid
      >>> lrs = np.geomspace(1e-4, 1.0, 40)
      >>> losses = np.tile(2.3 - 0.5 * np.log10(lrs / 1e-4), (4, 1))
      >>> result = RangeTestResult(
      ...     lrs=lrs, losses=losses, smoothed=losses, diverged_at=np.full(4, -1),
      ...     hparams={"weight_decay": np.array([1e-4, 1e-4, 0.0, 0.0]),
      ...              "momentum": np.array([0.9, 0.95, 0.9, 0.95])},
      ...     grid_names=("weight_decay", "momentum"))
      >>> fig = plot_range_test_grid(result, suggest=None)
      >>> print(len(fig.axes), fig.axes[1].get_title())
      4 weight_decay=1e-4, momentum=0.95
      >>> import matplotlib.pyplot as plt
      >>> plt.close(fig)
    """
    plt = _pyplot()
    placement = _legend_placement(legend)
    for name in ("ax", "lanes"):
        if name in kwargs:
            raise TypeError(f"plot_range_test_grid does not take {name!r}")
    axes_values = []
    for arg, name in (("row", row), ("col", col)):
        if name is not None and (not isinstance(name, str) or name not in result.hparams):
            raise ValueError(
                f"{arg} names a hyperparameter the result lacks: {name!r}; "
                f"it has {tuple(result.hparams)}"
            )
        values = np.asarray(result.hparams[name]) if name is not None else None
        order = list(dict.fromkeys(values.tolist())) if values is not None else [None]
        axes_values.append((name, values, order))
    (row_name, row_values, row_order), (col_name, col_values, col_order) = axes_values

    options = {**plot_range_test.__kwdefaults__, **kwargs}
    del options["legend"], options["title"]  # the figure's, not the panels'
    num_steps = np.shape(result.lrs)[0]
    window = _window(num_steps, options["skip_start"], options["skip_end"])
    # Checked before the figure is made, so a refused call leaves no empty figure behind.
    _check_suggest(options["suggest"])
    _check_label_by(result, np.arange(np.shape(result.losses)[0]), options["label_by"])
    _check_ylim(options["ylim"])
    _check_cmap(options["cmap"])
    if sharey and isinstance(options["ylim"], str) and options["ylim"] == "auto":
        shown = options["show_raw"] or options["show_min"]
        floor = _raw_floor(np.asarray(result.losses, dtype=np.float64)[:, window], shown)
        options["ylim"] = _auto_ylim(np.asarray(result.smoothed)[:, window], floor)
    nrows, ncols = len(row_order), len(col_order)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        squeeze=False,
        sharex=True,
        sharey=sharey,
        figsize=figsize or (3.4 * ncols + 0.6, 2.6 * nrows + 0.6),
    )
    num_lanes = np.shape(result.losses)[0]
    lane_handles, other_handles, first = {}, {}, None
    for r, row_value in enumerate(row_order):
        for c, col_value in enumerate(col_order):
            ax = axes[r, c]
            mask = np.ones(num_lanes, dtype=bool)
            parts = []
            for name, values, value in (
                (row_name, row_values, row_value),
                (col_name, col_values, col_value),
            ):
                if name is not None:
                    mask &= values == value
                    parts.append(f"{name}={_format_value(value)}")
            if not mask.any():
                ax.set_visible(False)
                continue
            options["lanes"] = mask
            _, lanes_drawn, others = _draw_range_test(result, ax, **options)
            if first is None:
                first = ax
            # One legend for all panels: each label once, lanes first.
            for handles, store in ((lanes_drawn, lane_handles), (others, other_handles)):
                for handle in handles:
                    store.setdefault(handle.get_label(), handle)
            ax.set_title(", ".join(parts), fontsize="medium")
    for ax in axes.flat:
        ax.label_outer()
    if title is not None:
        fig.suptitle(title)
    handles = [*lane_handles.values(), *other_handles.values()]
    scale = 1.0
    if placement == "inside" and handles:
        first.legend(handles=handles, fontsize="small", loc="best")
    elif placement is not None and handles:
        box = fig.legend(handles=handles, fontsize="small", loc="center left")
        scale = _widen(fig, box)  # the panels keep their size
        box.set_bbox_to_anchor((scale, 0.5))
    fig.tight_layout(rect=(0.0, 0.0, scale, 1.0))
    return fig


def plot_schedule(
    schedule: Callable[[jax.Array], jax.Array],
    num_steps: int,
    ax: Axes | None = None,
    momentum: Callable[[jax.Array], jax.Array] | None = None,
    label: str | None = None,
    *,
    log_lr: bool = False,
) -> Axes:
    """Plots a learning-rate schedule (and optionally momentum) against the step.

    The schedule is evaluated at steps ``0 .. num_steps - 1`` with
    ``jax.vmap``. A ``momentum`` schedule is drawn dashed in the same colour on
    a twin y-axis on the right (created once per Axes and reused, so several
    schedules can share one plot).

    Args:
      schedule: any ``step -> value`` schedule (``optax.Schedule``).
      num_steps: number of steps to draw.
      ax: the Axes to draw on; by default a new figure's.
      momentum: an optional momentum schedule.
      label: legend label of the schedule (its momentum line gets
        ``"<label> momentum"``); no legend when None and no momentum is given.
      log_lr: logarithmic learning-rate axis.

    Returns:
      The Axes of the learning rate (the momentum axis is the sibling Axes
      whose label is ``"clrjax-momentum"``).

    Examples:
      >>> import optax
      >>> from clrjax.plotting import plot_schedule
      >>> ax = plot_schedule(optax.cosine_decay_schedule(0.1, 100), 100, label="cosine")
      >>> print(len(ax.lines), ax.lines[0].get_label())
      1 cosine
      >>> import matplotlib.pyplot as plt
      >>> plt.close(ax.figure)
    """
    plt = _pyplot()
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int; got {num_steps!r}")
    if not callable(schedule):
        raise TypeError(f"schedule must be a callable step -> value; got {schedule!r}")
    if momentum is not None and not callable(momentum):
        raise TypeError(f"momentum must be a callable step -> value or None; got {momentum!r}")
    steps = jnp.arange(num_steps)
    values = _schedule_values("schedule", schedule, steps)
    momenta = None if momentum is None else _schedule_values("momentum", momentum, steps)
    if ax is None:
        _, ax = plt.subplots()
    (line,) = ax.plot(
        np.arange(num_steps),
        values,
        gid="clrjax-lr",
        label=label if label is not None else "learning rate",
    )
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    if log_lr:
        ax.set_yscale("log")
    handles = [line]
    if momentum is not None:
        momentum_ax = _momentum_axes(ax)
        momentum_ax.plot(
            np.arange(num_steps),
            momenta,
            linestyle="--",
            color=line.get_color(),
            gid="clrjax-momentum",
            label=f"{label} momentum" if label is not None else "momentum",
        )
        momentum_ax.set_ylabel("momentum")
        lr_lines, momentum_lines = (
            [h for h in a.get_lines() if not h.get_label().startswith("_")]
            for a in (ax, momentum_ax)
        )
        if len(lr_lines) == len(momentum_lines):  # one column per schedule: LR over momentum
            handles = [h for pair in zip(lr_lines, momentum_lines, strict=True) for h in pair]
            ncols = min(len(lr_lines), 4)
        else:
            handles, ncols = lr_lines + momentum_lines, 2
        # The legend goes in a band left empty above both axes' curves ("best"
        # only avoids the lines of one Axes).
        for a in (ax, momentum_ax):
            _leave_headroom(a, rows=-(-len(handles) // ncols))
        ax.legend(handles=handles, fontsize="small", loc="upper center", ncols=ncols)
    elif label is not None:
        ax.legend(handles=handles, fontsize="small", loc="best")
    return ax


def _schedule_values(
    name: str, schedule: Callable[[jax.Array], jax.Array], steps: jax.Array
) -> np.ndarray:
    """``schedule`` at every step (vmapped), checked to be one real number per step."""
    try:
        values = np.asarray(jax.vmap(schedule)(steps))
    except TypeError as e:
        raise TypeError(f"{name} must map a step to a number: {e}") from e
    if values.shape != steps.shape or values.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must map a step to one real number; got an array of shape "
            f"{values.shape[1:]} and dtype {values.dtype} per step"
        )
    return values


def plot_schedule_choice(
    choice: ScheduleChoice, axes: Sequence[Axes] | None = None
) -> Sequence[Axes]:
    """Plots how :func:`clrjax.find_schedule` chose: the curve and candidates, then the race.

    Left: the range test (:func:`plot_range_test`) with a tick at every
    candidate peak and a vertical line at the winner's. Right: every
    candidate's mean score in each rung against the rung's budget (steps, log
    axis), one line per candidate (dotted where it was dropped), the winner
    thick; decay candidates dashed.

    Args:
      choice: a :class:`clrjax.ScheduleChoice`.
      axes: two Axes to draw on; by default a new figure's.

    Returns:
      The two Axes.
    """
    plt = _pyplot()
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12.0, 4.5))
    curve_ax, race_ax = axes
    plot_range_test(choice.range_test, curve_ax, suggest=None, legend="inside")
    lo, _ = curve_ax.get_ylim()
    peaks = sorted({c.peak for c in choice.candidates})
    curve_ax.plot(
        peaks,
        [lo] * len(peaks),
        "|",
        color="k",
        markersize=12,
        gid="clrjax-candidate",
        label="candidate peaks",
        clip_on=False,
    )
    curve_ax.axvline(
        choice.learning_rate,
        color="C3",
        linewidth=1.5,
        gid="clrjax-winner",
        label=f"winner: {choice.kind} {choice.learning_rate:.3g}",
    )
    curve_ax.legend(fontsize="small", loc="best")
    table = choice.candidate_scores()
    budgets = [r.num_steps for r in choice.rungs]
    winner = choice.winner
    for i, cand in enumerate(choice.candidates):
        raced = np.isfinite(table[i])
        if i == winner:
            continue
        race_ax.plot(
            np.array(budgets)[raced],
            table[i][raced],
            linestyle="--" if cand.kind == "decay" else "-",
            marker="o",
            markersize=3,
            linewidth=0.8,
            alpha=0.6,
            color="0.5",
            gid="clrjax-race",
        )
    race_ax.plot(
        budgets,
        table[winner],
        marker="o",
        linewidth=2.5,
        color="C3",
        gid="clrjax-winner",
        label=f"winner: {choice.candidates[winner].label()}",
    )
    race_ax.set_xscale("log")
    race_ax.set_xticks(budgets, [str(b) for b in budgets])
    race_ax.set_xlabel("rung budget (steps)")
    race_ax.set_ylabel(f"score: {choice.score}")
    race_ax.set_title(f"race: {len(choice.candidates)} candidates, {len(budgets)} rungs")
    race_ax.legend(fontsize="small", loc="best")
    return axes


def _leave_headroom(ax: Axes, rows: int) -> None:
    """Sets the y-limits to the data plus a band for ``rows`` legend rows on top."""
    lo, hi = ax.dataLim.intervaly
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return
    band = _LEGEND_BAND * rows
    if ax.get_yscale() == "log" and lo > 0:
        ratio = hi / lo if hi > lo else 10.0
        ax.set_ylim(lo / ratio**0.05, hi * ratio**band)
    else:
        span = hi - lo if hi > lo else max(abs(hi), 1.0)
        ax.set_ylim(lo - 0.05 * span, hi + band * span)


def _momentum_axes(ax: Axes) -> Axes:
    """The twin y-axis for momentum of ``ax``, created on first use."""
    for other in ax.figure.axes:
        if other is not ax and other.get_label() == "clrjax-momentum":
            if other.get_shared_x_axes().joined(other, ax):
                return other
    twin = ax.twinx()
    twin.set_label("clrjax-momentum")
    return twin
