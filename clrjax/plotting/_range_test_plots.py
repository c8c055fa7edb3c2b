"""Range-test plots: :func:`plot_range_test` and its small multiples,
:func:`plot_range_test_grid` (with the automatic y-range that cuts off the
exploding tail)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clrjax._suggest import DEFAULT_METHOD
from clrjax.plotting._checks import (
    _check_cmap,
    _check_label_by,
    _check_suggest,
    _check_ylim,
    _lane_indices,
    _legend_placement,
    _window,
)
from clrjax.plotting._style import _format_value, _legend_entries, _markers, _pyplot, _widen

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from clrjax._result import RangeTestResult


# Marker of the i-th suggestion method drawn on one plot ("*" marks raw minima,
# "X" divergences).
_SUGGESTION_MARKERS = ("o", "v", "s", "D", "^", "P", "h")
# The automatic y-limit stops at the first smoothed loss plus this fraction of
# the drop from it to the lowest smoothed loss.
_YLIM_HEADROOM = 0.5
# A legend=True legend with more entries than this goes outside the Axes.
_LEGEND_INSIDE_MAX = 5


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


def _raw_floor(raw: np.ndarray, shown: bool) -> float | None:
    """The lowest finite raw loss when raw losses are ``shown``, else None."""
    finite = raw[np.isfinite(raw)]
    return float(finite.min()) if shown and finite.size else None


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
