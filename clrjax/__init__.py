"""clrjax: cyclical learning rates, one-cycle schedules and a vmapped LR range test.

Schedules are pure, jittable ``step -> value`` functions (``optax.Schedule``)
whose numeric arguments may be traced; the LR range test trains many
candidate configurations as lanes of one compiled program.
"""

from clrjax._range_test import range_test
from clrjax._result import RangeTestResult
from clrjax._suggest import SUGGESTION_METHODS, suggest, suggest_spread

__version__ = "0.1.0"

__all__ = [
    "SUGGESTION_METHODS",
    "RangeTestResult",
    "__version__",
    "range_test",
    "suggest",
    "suggest_spread",
]
