"""The comparison's figures: test accuracy per arm against the epoch
(:func:`plot_results`) beside find_schedule's own plot (:func:`comparison_figure`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from clrjax.demo._comparison._report import schedule_text
from clrjax.demo._comparison._training import ComparisonResult


def default_plot_arms(result: ComparisonResult) -> list[str]:
    """The arms :func:`plot_results` draws by default: all but the hand-picked, and their best."""
    names = [arm.name for arm in result.arms if arm.source != "hand-picked"]
    best = result.best_hand_picked()
    return names + ([result.arms[best].name] if best is not None else [])


def plot_results(
    result: ComparisonResult, arms: Sequence[str] | None = None, ax: Any = None
) -> Any:
    """Plots test accuracy against epoch per arm (mean over seeds, ± std band).

    Args:
      result: a :class:`ComparisonResult`.
      arms: names of the arms to draw (default :func:`default_plot_arms`).
      ax: matplotlib ``Axes`` to draw on (a new figure when None).

    Returns:
      The matplotlib ``Axes``.
    """
    from matplotlib.ticker import MaxNLocator

    from clrjax.plotting._style import _pyplot

    names = result.arm_names
    arms = default_plot_arms(result) if arms is None else list(arms)
    unknown = [name for name in arms if name not in names]
    if unknown:
        raise ValueError(f"arms must be names from {names}; got {unknown}")
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(6.4, 4.0))
    epochs = np.arange(1, result.test_acc.shape[-1] + 1)
    shown = [names.index(name) for name in arms]
    for i in shown:
        acc = result.test_acc[i] * 100.0
        mean, std = acc.mean(axis=0), acc.std(axis=0)
        (line,) = ax.plot(
            epochs,
            mean,
            label=f"{names[i]}: {schedule_text(result.arms[i])}",
            linewidth=2.0 if names[i] == "find_schedule" else 1.2,
        )
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.axhline(
        result.target.mean() * 100.0, color="grey", linestyle=":", label="baseline final (mean)"
    )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    seeds = result.test_acc.shape[1]
    ax.set_title(f"{result.task.name}: SGD + Nesterov, {seeds} seeds (mean ± std)")
    later = result.test_acc[shown][:, :, len(epochs) // 4 :] * 100.0
    low = min(np.percentile(later, 5), result.target.mean() * 100.0)
    ax.set_ylim(max(0.0, low - 2.0), min(100.0, later.max() + 1.0))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def comparison_figure(result: ComparisonResult) -> Any:
    """find_schedule's plot (range test and candidates, the race) beside the accuracy curves."""
    from clrjax.plotting._style import _pyplot

    fig, axes = _pyplot().subplots(1, 3, figsize=(18.0, 4.6))
    result.choice.plot(axes=axes[:2])
    axes[0].set_title(f"{result.task.name}: find_schedule's range test and candidates")
    axes[1].set_title(f"the race: {result.choice.score}, mean per rung")
    plot_results(result, ax=axes[2])
    fig.tight_layout()
    return fig
