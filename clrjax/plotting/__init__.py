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

One concept per module:

* :mod:`~clrjax.plotting._style`: lane colours and line styles, legend
  entries, markers, and the lazy import of ``matplotlib.pyplot``;
* :mod:`~clrjax.plotting._checks`: checks of the plot functions' arguments;
* :mod:`~clrjax.plotting._range_test_plots`: :func:`plot_range_test` and
  :func:`plot_range_test_grid`;
* :mod:`~clrjax.plotting._schedule_plots`: :func:`plot_schedule` and
  :func:`plot_schedule_choice`.
"""

from clrjax.plotting._range_test_plots import plot_range_test, plot_range_test_grid
from clrjax.plotting._schedule_plots import plot_schedule, plot_schedule_choice

__all__ = ["plot_range_test", "plot_range_test_grid", "plot_schedule", "plot_schedule_choice"]
