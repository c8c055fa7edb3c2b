"""The comparison's text report: the Markdown tables of the arms
(:func:`format_table`) and of find_schedule's race (:func:`format_race`), and
the one-line :func:`verdict`."""

from __future__ import annotations

import numpy as np

import clrjax
from clrjax.demo._comparison._statistics import outcome, paired
from clrjax.demo._comparison._tasks import Arm
from clrjax.demo._comparison._training import ComparisonResult


def schedule_text(arm: Arm) -> str:
    """E.g. ``"one-cycle, peak 0.38"`` or ``"0.3, x0.97 per epoch"``."""
    if arm.kind == "one_cycle":
        return f"one-cycle, peak {arm.lr:.3g}"
    if arm.kind == "decay":
        return f"{arm.lr:.3g}, decayed per epoch"
    return f"{arm.lr:.3g}, constant"


def verdict(result: ComparisonResult) -> str:
    """One line: does find_schedule's schedule end above the baseline (paired over seeds)?

    Examples:
      >>> import types
      >>> arms = (Arm("baseline", "constant", 0.01, "baseline"),
      ...         Arm("find_schedule", "decay", 0.3, "find_schedule"))
      >>> fake = types.SimpleNamespace(arms=arms, final=np.array([[60.0, 61, 62], [72, 71, 73]]),
      ...                              arm_names=("baseline", "find_schedule"))
      >>> print(verdict(fake))  # doctest: +NORMALIZE_WHITESPACE
      verdict: find_schedule (0.3, decayed per epoch) ends at 72.0% vs the baseline's 61.0%
      (constant 0.01): +11.00 ± 0.58 points over 3 seeds (paired): better.
    """
    final = result.final
    base, found = 0, result.arm_names.index("find_schedule")
    mean, se = paired(final[found], final[base])
    return (
        f"verdict: find_schedule ({schedule_text(result.arms[found])}) ends at "
        f"{final[found].mean():.1f}% vs the baseline's {final[base].mean():.1f}% "
        f"(constant {result.arms[base].lr:g}): {mean:+.2f} ± {se:.2f} points over "
        f"{final.shape[1]} seeds (paired): {outcome(mean, se)}."
    )


def _mean_std(values: np.ndarray, digits: int = 1) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def format_table(result: ComparisonResult) -> str:
    """A Markdown table: per arm its schedule, final accuracy, the gain over the baseline, speed.

    Accuracies are mean ± std over seeds; the gain is paired over seeds (mean ±
    standard error, and its verdict by :func:`holds`); *epochs to the
    baseline's final accuracy* counts, per seed, the first epoch reaching the
    baseline's final accuracy with that seed (mean ± std over the seeds that
    reach it).
    """
    final = result.final
    seeds = final.shape[1]
    reached = result.epochs_to_target
    lines = [
        "| arm | schedule | final test acc. (%) | vs baseline (points, paired) | "
        "epochs to baseline's final acc. | best epoch acc. (%) |",
        "|---|---|---|---|---|---|",
    ]
    for i, arm in enumerate(result.arms):
        hit = reached[i][reached[i] > 0]
        speed = (_mean_std(hit) if hit.size else "-") + (
            f" (never on {seeds - hit.size}/{seeds})" if hit.size < seeds else ""
        )
        gain = (
            "-"
            if i == 0
            else "{:+.2f} ± {:.2f} ({})".format(
                *paired(final[i], final[0]), outcome(*paired(final[i], final[0]), "higher", "lower")
            )
        )
        broke = int(result.diverged[i].sum())
        note = f" ({broke}/{seeds} diverged, counted as 0)" if broke else ""
        lines.append(
            f"| {arm.name} | {schedule_text(arm)} | {_mean_std(final[i])}{note} | {gain} | "
            f"{speed} | {_mean_std(result.test_acc[i].max(axis=-1) * 100.0)} |"
        )
    return "\n".join(lines)


def format_race(choice: clrjax.ScheduleChoice) -> str:
    """A Markdown table of find_schedule's race: each candidate's mean score per rung."""
    table = choice.candidate_scores()
    header = " | ".join(f"rung {j + 1}: {r.num_steps} steps" for j, r in enumerate(choice.rungs))
    lines = [
        f"| candidate | nearest suggestions | {header} |",
        "|---|---|" + "---|" * len(choice.rungs),
    ]
    for i, cand in enumerate(choice.candidates):
        cells = " | ".join("-" if np.isnan(v) else f"{100.0 * v:.1f}" for v in table[i])
        name = f"**{cand.label()}** (winner)" if i == choice.winner else cand.label()
        lines.append(f"| {name} | {cand.source or '-'} | {cells} |")
    return "\n".join(lines)
