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
``clrjax-diverged``    the step at which each diverged lane stopped
``clrjax-lr``          a learning-rate schedule
``clrjax-momentum``    a momentum schedule (on a twin y-axis)
=====================  ===================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from clrjax._result import RangeTestResult

__all__ = ["plot_range_test", "plot_range_test_grid", "plot_schedule"]

# Marker of the i-th suggestion method drawn on one plot.
_SUGGESTION_MARKERS = ("o", "v", "s", "D", "^", "P", "*")
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
        colormap = _pyplot().get_cmap(cmap or "viridis")
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


def _auto_ylim(curves: np.ndarray) -> tuple[float, float] | None:
    """The y-range of smoothed curves with the exploding tail cut off.

    From the lowest smoothed loss ``lo`` up to ``min(highest, start + 0.5 (start - lo))``,
    where ``start`` is the largest first finite smoothed loss of a lane, plus 5%
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
    span = top - lo
    if not span > 0:
        return None
    return float(lo - 0.05 * span), float(top + 0.05 * span)


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


def plot_range_test(
    result: RangeTestResult,
    ax: Axes | None = None,
    *,
    lanes: Any = None,
    suggest: str | Sequence[str] | None = "valley",
    skip_start: int = 0,
    skip_end: int = 0,
    show_raw: bool = True,
    show_val: bool = True,
    label_by: str | Sequence[str] | None = None,
    log_lr: bool = True,
    ylim: tuple[float, float] | str | None = "auto",
    cmap: Any = None,
    legend: bool = True,
    title: str | None = None,
) -> Axes:
    """Plots loss against learning rate for the lanes of a range test.

    Each lane's smoothed loss is a line over faint points of its raw loss; the
    lanes are coloured and labelled by the hyperparameters that differ between
    them (a sequential colormap when one numeric hyperparameter varies, such
    as Smith's weight-decay grid; with two, the first sets the colour and the
    second, up to four values, the line style, unless validation curves are
    drawn). Lanes with equal ``label_by`` values (by
    default the seeds of one configuration) share a colour and a legend
    entry. Markers show
    the learning rates :meth:`RangeTestResult.suggest` picks for each method and
    an ``x`` where each diverged lane stopped; validation losses, when
    recorded, are dashed lines at the learning rates of their steps.

    The y-axis is cut where the loss explodes: with ``ylim="auto"`` it spans
    the lowest smoothed loss ``lo`` up to
    ``min(max smoothed, start + 0.5 * (start - lo))``, ``start`` being the
    highest first smoothed loss of a lane (so the informative descent fills the
    plot; fastai and torch-lr-finder instead trim the last steps, which
    ``skip_end`` also does here). Markers beyond the top sit on the top edge.

    Args:
      result: a :class:`clrjax.RangeTestResult`.
      ax: the Axes to draw on; by default a new figure's.
      lanes: which lanes to draw (indices or a boolean mask); all by default.
      suggest: a suggestion method name, a sequence of names, or None for no
        markers (see :data:`clrjax.SUGGESTION_METHODS`).
      skip_start: steps left out at the start of every curve.
      skip_end: steps left out at the end of every curve.
      show_raw: draw the raw per-step losses as faint points.
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
      legend: draw a legend.
      title: the Axes title.

    Returns:
      The matplotlib Axes drawn on.

    Examples:
      >>> import numpy as np
      >>> from clrjax import RangeTestResult
      >>> from clrjax.plotting import plot_range_test
      >>> lrs = np.geomspace(1e-4, 1.0, 40)
      >>> curve = 2.3 - 0.5 * np.log10(lrs / 1e-4)
      >>> losses = np.stack([curve, curve - 0.1])
      >>> result = RangeTestResult(
      ...     lrs=lrs, losses=losses, smoothed=losses, diverged_at=np.array([-1, -1]),
      ...     hparams={"weight_decay": np.array([1e-4, 0.0])}, grid_names=("weight_decay",))
      >>> ax = plot_range_test(result, suggest=["valley", "steepest"])
      >>> print([line.get_label() for line in ax.lines if line.get_gid() == "clrjax-smoothed"])
      ['weight_decay=1e-4', 'weight_decay=0']
      >>> import matplotlib.pyplot as plt
      >>> plt.close(ax.figure)
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D

    idx = _lane_indices(result, lanes)
    lrs = np.asarray(result.lrs, dtype=np.float64)
    smoothed = np.asarray(result.smoothed, dtype=np.float64)
    raw = np.asarray(result.losses, dtype=np.float64)
    window = _window(lrs.shape[0], skip_start, skip_end)
    methods = (suggest,) if isinstance(suggest, str) else tuple(suggest or ())
    if label_by is None:
        label_by = _default_label_by(result, idx)
    elif isinstance(label_by, str):
        label_by = (label_by,)
    label_by = tuple(label_by)
    for name in label_by:
        if name not in result.hparams:
            raise ValueError(
                f"label_by names a hyperparameter the result lacks: {name!r}; "
                f"it has {tuple(result.hparams)}"
            )
    if ax is None:
        _, ax = plt.subplots()

    has_val = show_val and result.val_steps is not None and result.val_losses is not None
    # Validation curves are dashed, so line styles only encode a hyperparameter without them.
    keys, styles = _group_styles(result, idx, label_by, cmap, linestyles=not has_val)
    colours = {key: colour for key, (colour, _) in styles.items()}
    handles = []
    for lane, key in zip(idx, keys, strict=True):
        if show_raw:
            ax.plot(
                lrs[window],
                raw[lane, window],
                linestyle="none",
                marker=".",
                markersize=2,
                alpha=0.25,
                color=colours[key],
                gid="clrjax-raw",
                label="_nolegend_",
            )
        label = ", ".join(f"{n}={_format_value(v)}" for n, v in zip(label_by, key, strict=True))
        (line,) = ax.plot(
            lrs[window],
            smoothed[lane, window],
            color=colours[key],
            linestyle=styles[key][1],
            linewidth=1.6,
            gid="clrjax-smoothed",
            label=label or "_nolegend_",
        )
        if label and label not in [h.get_label() for h in handles]:
            handles.append(line)

    if has_val:
        val_steps = np.asarray(result.val_steps)
        keep = (val_steps >= window.start) & (val_steps < window.stop)
        val_losses = np.asarray(result.val_losses, dtype=np.float64)
        for lane, key in zip(idx, keys, strict=True):
            ax.plot(
                lrs[val_steps[keep]],
                val_losses[lane, keep],
                linestyle="--",
                marker=".",
                markersize=4,
                color=colours[key],
                gid="clrjax-val",
                label="_nolegend_",
            )
        if keep.any():
            handles.append(Line2D([], [], linestyle="--", color="gray", label="validation"))

    if log_lr:
        ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    if isinstance(ylim, str):
        if ylim != "auto":
            raise ValueError(f"ylim must be 'auto', None or (bottom, top); got {ylim!r}")
        ylim = _auto_ylim(smoothed[idx, window])
    if ylim is not None:
        ax.set_ylim(*ylim)
    top = ax.get_ylim()[1]

    window_lrs, window_curves = lrs[window], smoothed[:, window]
    for k, method in enumerate(methods):
        picks = np.asarray(result.suggest(method), dtype=np.float64)
        points = []
        for lane, key in zip(idx, keys, strict=True):
            lr = picks[lane]
            if np.isfinite(lr) and window_lrs.min() <= lr <= window_lrs.max():
                y = _value_at_lr(window_lrs, window_curves[lane], lr)
                if np.isfinite(y):
                    points.append((lr, min(y, top), colours[key]))
        marker = _SUGGESTION_MARKERS[k % len(_SUGGESTION_MARKERS)]
        if points:
            xs, ys, cs = zip(*points, strict=True)
            ax.scatter(
                xs,
                ys,
                s=55,
                marker=marker,
                c=list(cs),
                edgecolors="black",
                linewidths=1.0,
                zorder=4,
                gid="clrjax-suggestion",
                label=f"suggested ({method})",
            )
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker=marker,
                markerfacecolor="white",
                markeredgecolor="black",
                label=f"suggested ({method})",
            )
        )

    points = []
    for lane in idx:
        step = int(np.asarray(result.diverged_at)[lane])
        if window.start <= step < window.stop:
            y = _last_finite(smoothed[lane], step)
            points.append((lrs[step], min(y, top) if np.isfinite(y) else top))
    if points:
        xs, ys = zip(*points, strict=True)
        ax.scatter(
            xs,
            ys,
            s=60,
            marker="x",
            c="black",
            linewidths=1.5,
            zorder=5,
            gid="clrjax-diverged",
            label="diverged",
        )
        handles.append(
            Line2D([], [], linestyle="none", marker="x", color="black", label="diverged")
        )

    if title is not None:
        ax.set_title(title)
    if legend and handles:
        ax.legend(handles=handles, fontsize="small", loc="best")
    return ax


def plot_range_test_grid(
    result: RangeTestResult,
    row: str | None = "weight_decay",
    col: str | None = "momentum",
    *,
    figsize: tuple[float, float] | None = None,
    sharey: bool = True,
    title: str | None = None,
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
      figsize: figure size in inches; by default 3.4 x 2.6 per panel.
      sharey: share the y-axis between panels.
      title: the figure's title (``suptitle``).
      **kwargs: passed on to :func:`plot_range_test` (not ``ax``, ``lanes``).
        The legend is drawn in the first panel only.

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
    for name in ("ax", "lanes"):
        if name in kwargs:
            raise TypeError(f"plot_range_test_grid does not take {name!r}")
    axes_values = []
    for arg, name in (("row", row), ("col", col)):
        if name is not None and name not in result.hparams:
            raise ValueError(
                f"{arg} names a hyperparameter the result lacks: {name!r}; "
                f"it has {tuple(result.hparams)}"
            )
        values = np.asarray(result.hparams[name]) if name is not None else None
        order = list(dict.fromkeys(values.tolist())) if values is not None else [None]
        axes_values.append((name, values, order))
    (row_name, row_values, row_order), (col_name, col_values, col_order) = axes_values

    num_steps = np.shape(result.lrs)[0]
    window = _window(num_steps, kwargs.get("skip_start", 0), kwargs.get("skip_end", 0))
    if sharey and kwargs.get("ylim", "auto") == "auto":
        kwargs["ylim"] = _auto_ylim(np.asarray(result.smoothed)[:, window])
    nrows, ncols = len(row_order), len(col_order)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        squeeze=False,
        sharex=True,
        sharey=sharey,
        figsize=figsize or (3.4 * ncols + 0.6, 2.6 * nrows + 0.6),
    )
    legend = kwargs.pop("legend", True)
    num_lanes = np.shape(result.losses)[0]
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
            plot_range_test(result, ax, lanes=mask, legend=legend and r == 0 and c == 0, **kwargs)
            ax.set_title(", ".join(parts), fontsize="medium")
    for ax in axes.flat:
        ax.label_outer()
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
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
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int; got {num_steps!r}")
    if not callable(schedule):
        raise TypeError(f"schedule must be a callable step -> value; got {schedule!r}")
    if momentum is not None and not callable(momentum):
        raise TypeError(f"momentum must be a callable step -> value or None; got {momentum!r}")
    if ax is None:
        _, ax = plt.subplots()
    steps = jnp.arange(num_steps)
    values = np.asarray(jax.vmap(schedule)(steps))
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
            np.asarray(jax.vmap(momentum)(steps)),
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
