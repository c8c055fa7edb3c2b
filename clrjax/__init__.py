"""clrjax: cyclical learning rates, one-cycle schedules and a vmapped LR range test.

Schedules are pure, jittable ``step -> value`` functions (``optax.Schedule``)
whose numeric arguments may be traced; the LR range test trains many
candidate configurations as lanes of one compiled program.
"""

from clrjax._cyclic import (
    cyclic_momentum_schedule,
    cyclic_schedule,
    exp_range_schedule,
    triangular2_schedule,
    triangular_schedule,
)
from clrjax._find_schedule import find_schedule, find_schedule_step
from clrjax._one_cycle import one_cycle_momentum_schedule, one_cycle_schedule
from clrjax._optax_glue import scheduled
from clrjax._options import Curve, Execution, Model, Search, Validation
from clrjax._pytorch_sgd import pytorch_sgd
from clrjax._range_test import RangeTestInterrupted, range_test
from clrjax._range_test_step import range_test_step
from clrjax._result import BestLane, RangeTestResult
from clrjax._schedule_choice import FindScheduleInterrupted, ScheduleChoice
from clrjax._suggest import SUGGESTION_METHODS, SuggestionSpread, suggest, suggest_spread
from clrjax._warm_restarts import cosine_warm_restarts_schedule

__version__ = "0.1.0"

__all__ = [
    "SUGGESTION_METHODS",
    "BestLane",
    "Curve",
    "Execution",
    "FindScheduleInterrupted",
    "Model",
    "RangeTestInterrupted",
    "RangeTestResult",
    "ScheduleChoice",
    "Search",
    "SuggestionSpread",
    "Validation",
    "__version__",
    "cosine_warm_restarts_schedule",
    "cyclic_momentum_schedule",
    "cyclic_schedule",
    "exp_range_schedule",
    "find_schedule",
    "find_schedule_step",
    "one_cycle_momentum_schedule",
    "one_cycle_schedule",
    "pytorch_sgd",
    "range_test",
    "range_test_step",
    "scheduled",
    "suggest",
    "suggest_spread",
    "triangular2_schedule",
    "triangular_schedule",
]
