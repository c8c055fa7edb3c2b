"""Schedule plots: :func:`plot_schedule` (learning rate and momentum against the
step) and :func:`plot_schedule_choice` (how :func:`clrjax.find_schedule` chose:
the range test with its candidates, then the race)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from clrjax.plotting._range_test_plots import plot_range_test
from clrjax.plotting._style import _pyplot

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes

    from clrjax._schedule_choice import ScheduleChoice


# Fraction of the data range added above schedule curves per legend row.
_LEGEND_BAND = 0.3


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
