"""How range-test plots look: lane colours and line styles, legend entries, markers.

Lanes are coloured (and line-styled) by the hyperparameters that vary between
them; lanes whose curves coincide share one legend entry ending in
``(identical)``, and curves lying on another carry staggered dots. Also the
lazy import of ``matplotlib.pyplot`` that every plot goes through.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from clrjax._result import RangeTestResult


# Part of the sequential colormap used for one numeric axis (avoids the
# faint yellow end of viridis).
_CMAP_RANGE = (0.0, 0.85)
# Line styles telling apart the values of a second hyperparameter.
_LINESTYLES = ("-", "--", ":", "-.")
# Two curves closer than this fraction of the y-range hide each other (a line
# is about 0.6% of the height of a default figure's Axes).
_OVERLAP_TOL = 0.01
# A curve lying on another entry's for at least this fraction of its points
# gets dots along it, staggered between such curves.
_OVERLAP_MIN = 0.5
# About how many dots such a curve gets.
_DOTS_PER_CURVE = 10
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
      >>> from clrjax.plotting._style import _format_value
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


class _Entry(NamedTuple):
    """One legend entry of a range-test plot: lanes drawn alike."""

    label: str  # "" when nothing varies (no legend entry)
    colour: Any
    linestyle: str
    markevery: tuple[int, int] | None  # dots along the curves, or None


def _entry_label(label_by: tuple[str, ...], keys: list[tuple]) -> str:
    """Legend label of lanes with the ``label_by`` values ``keys`` (several when identical).

    Examples:
      >>> from clrjax.plotting._style import _entry_label
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


def _widen(fig: Figure, legend: Any) -> float:
    """Widens ``fig`` by the width of ``legend``; returns old width / new width."""
    old = fig.get_figwidth()
    new = old + legend.get_window_extent().width / fig.dpi + _LEGEND_PAD
    fig.set_size_inches(new, fig.get_figheight())
    return old / new
