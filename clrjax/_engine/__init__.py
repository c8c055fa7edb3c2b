"""The lane engine: K lanes of a training step through N steps in one compiled program.

A *lane* is one candidate training run: its own train state (params,
optimizer state, model state), its own hyperparameters, PRNG key and data
order, and a learning rate (or any hyperparameter) at every step, shared by
all lanes (the range test's ramp) or its own (a schedule in a race). The
applications (:mod:`clrjax._range_test`, :mod:`clrjax._range_test_step`,
:mod:`clrjax._find_schedule`) describe what one lane does with a
:class:`~clrjax._engine.task.Task` and call :func:`run` once per stage.

One concept per module:

* :mod:`~clrjax._engine.task`: the protocol of what one lane trains;
* :mod:`~clrjax._engine.held`: the leaves of a train state that are not
  arrays (an Equinox module's functions), held fixed outside the program;
* :mod:`~clrjax._engine.lane_step`: one lane's step (the task's step, then
  loss smoothing and divergence tracking), typed state and outputs;
* :mod:`~clrjax._engine.feeding`: where each step's batch and hyperparameters
  come from (arrays by index, or a stream of batches), chunk by chunk;
* :mod:`~clrjax._engine.placement`: how the lanes share the machine (``vmap``,
  ``serial`` lane groups, memory-bounded ``map`` groups, sharding over devices);
* :mod:`~clrjax._engine.program`: the compiled init and step-runner of a
  configuration, cached;
* :mod:`~clrjax._engine.drivers`: how the steps are driven (one ``scan``,
  ``chunks`` with progress and Ctrl-C between them, or one loop-free step per
  call);
* :mod:`~clrjax._engine.strategy`: the rules that choose among them;
* :mod:`~clrjax._engine.runner`: :func:`run`, which ties them together.

Nothing here knows about suggestions, plots or datasets. The applications
import what they use from this package, never from its modules.
"""

from clrjax._engine.feeding import (
    BatchSource,
    BatchStream,
    StepPlan,
    batch_orders,
    example_count,
    is_batch_stream,
    plan_batches,
    validation_batches,
)
from clrjax._engine.lane_step import SMOOTHINGS, Tracking
from clrjax._engine.runner import (
    DRIVER_CHOICES,
    STRATEGIES,
    Interrupted,
    LaneSpec,
    Request,
    RunOutput,
    run,
)
from clrjax._engine.strategy import host_memory_budget
from clrjax._engine.task import Task

__all__ = [
    "DRIVER_CHOICES",
    "SMOOTHINGS",
    "STRATEGIES",
    "BatchSource",
    "BatchStream",
    "Interrupted",
    "LaneSpec",
    "Request",
    "RunOutput",
    "StepPlan",
    "Task",
    "Tracking",
    "batch_orders",
    "example_count",
    "host_memory_budget",
    "is_batch_stream",
    "plan_batches",
    "run",
    "validation_batches",
]
