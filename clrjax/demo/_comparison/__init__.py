"""Does :func:`clrjax.find_schedule` pay off? A training comparison on the offline demo datasets.

Used by ``clrjax train-demo`` and ``examples/seed_claim.py``; the protocol is
in :mod:`~clrjax.demo._comparison._training`. One concept per module:

* :mod:`~clrjax.demo._comparison._tasks`: the task registry (:data:`TASKS`,
  :class:`DemoTask`, :class:`Arm`, :func:`demo_problem`);
* :mod:`~clrjax.demo._comparison._training`: find_schedule and the arms'
  training (:func:`run_comparison`, :func:`train_arms`, :class:`ComparisonResult`);
* :mod:`~clrjax.demo._comparison._statistics`: paired differences over seeds
  and their verdict (:func:`paired`, :func:`holds`, :func:`outcome`,
  :func:`epochs_to_reach`);
* :mod:`~clrjax.demo._comparison._report`: the text report
  (:func:`format_table`, :func:`format_race`, :func:`verdict`);
* :mod:`~clrjax.demo._comparison._figures`: the figures (:func:`plot_results`,
  :func:`comparison_figure`).
"""

from clrjax.demo._comparison._figures import comparison_figure, default_plot_arms, plot_results
from clrjax.demo._comparison._report import format_race, format_table, schedule_text, verdict
from clrjax.demo._comparison._statistics import SE_RULE, epochs_to_reach, holds, outcome, paired
from clrjax.demo._comparison._tasks import ARM_KINDS, TASKS, Arm, DemoTask, demo_problem
from clrjax.demo._comparison._training import (
    FIRST_SEED,
    RACE_FRACTION,
    ComparisonResult,
    FindScheduleFailed,
    Training,
    arm_schedules,
    find_demo_schedule,
    nesterov_sgd,
    race_split,
    run_comparison,
    train_arms,
)

__all__ = [
    "ARM_KINDS",
    "FIRST_SEED",
    "RACE_FRACTION",
    "SE_RULE",
    "TASKS",
    "Arm",
    "ComparisonResult",
    "DemoTask",
    "FindScheduleFailed",
    "Training",
    "arm_schedules",
    "comparison_figure",
    "default_plot_arms",
    "demo_problem",
    "epochs_to_reach",
    "find_demo_schedule",
    "format_race",
    "format_table",
    "holds",
    "nesterov_sgd",
    "outcome",
    "paired",
    "plot_results",
    "race_split",
    "run_comparison",
    "schedule_text",
    "train_arms",
    "verdict",
]
