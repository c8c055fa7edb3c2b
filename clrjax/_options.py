"""The option objects the entry points take whole: how, what curve, which model, what race.

:func:`clrjax.range_test`, :func:`clrjax.range_test_step`,
:func:`clrjax.find_schedule` and :func:`clrjax.find_schedule_step` take their
everyday arguments as keywords and the rest as frozen option objects, each
validated once, where it is built, and forwarded whole down the layers:

* :class:`Execution`: how the lanes share the machine (strategy, driver,
  sharding, memory, progress);
* :class:`Curve`: the range test's ramp, smoothing and divergence rules;
* :class:`Model`: what the loss function or train step needs besides the
  batch (an ``init_fn``, model state, a PRNG key, a compute dtype);
* :class:`Validation`: the range test's validation data and how it is scored;
* :class:`Search`: the range test :func:`clrjax.find_schedule` runs, its
  ``"decay"`` kind and its race.

A keyword that moved into one of them raises a ``TypeError`` naming its new
home (:func:`moved_keywords`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clrjax import _engine, _ramp
from clrjax import _numerics as num
from clrjax._candidates import MIN_RANGE_TEST_STEPS

AUTO_BETA_MAX = 0.98  # beta="auto" never smooths more than fastai's default
# The rebound rule's start level: the mean raw loss of the first tenth of the steps,
# and at least of this many (a start taken over 3 noisy batches armed it at once).
REBOUND_MIN_START_STEPS = 10


def _optional_count(name: str, value: Any, minimum: int = 1) -> None:
    if value is not None:
        num.check_count(name, value, minimum)


def _optional_callable(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Execution:
    """How the lanes share the machine; the defaults choose by rules.

    Attributes:
      strategy: ``"vmap"`` (one batched step), ``"serial"`` (lanes, or groups
        of ``lane_group_size``, one after another through the steps: unbatched
        matmuls, a lane's state stays in cache), ``"map"`` (every step maps
        over groups of ``lane_group_size`` lanes, to bound memory), ``"auto"``
        (rules from the step's size, its convolutions, the device and the
        memory budget; see ``docs/range_test.md``) or ``"timed"`` (``"vmap"``
        and ``"serial"`` timed on the first chunk, the faster kept; cached per
        process).
      lane_group_size: lanes per group for ``"serial"`` and ``"map"``.
      shard_lanes: split the lanes over all devices (padded to a multiple of
        the device count); ``None``: when there are several devices. Data and
        validation batches are replicated.
      driver: ``"scan"`` (all steps in one call), ``"chunks"`` (``chunk_size``
        steps per call; a progress bar, an early stop and Ctrl-C between
        chunks), ``"python"`` (one loop-free step per call: XLA:CPU runs
        convolutions inside loops ~10x slower) or ``"auto"`` (``"python"`` for
        convolutions on CPU; ``"chunks"`` for a progress bar, a stream of
        batches or a run estimated to take over a second; else ``"scan"``).
      chunk_size: steps per chunk of the range test (default
        ``ceil(num_steps / 10)``; :func:`clrjax.find_schedule`'s race runs an
        epoch per chunk).
      max_memory: bytes the lanes may use per device; default: 90% of the free
        accelerator memory, or half the available RAM. Lanes that do not fit
        step in groups; a run that cannot fit even one lane at a time is refused.
      mesh: a ``jax.sharding.Mesh`` with the axes ``("lanes", "data")``: lanes
        split over ``"lanes"``, each lane's batch over ``"data"``
        (``docs/scale.md``).
      progress: the range tests show a tqdm bar, :func:`clrjax.find_schedule`
        prints each stage's time on stderr; ``None``: when stderr is a terminal
        (and, for the bar, tqdm is installed).

    Examples:
      >>> import clrjax
      >>> clrjax.Execution(strategy="serial", lane_group_size=4)
      Execution(strategy='serial', lane_group_size=4, shard_lanes=None, driver='auto', \
chunk_size=None, max_memory=None, mesh=None, progress=None)
      >>> clrjax.Execution(driver="loop")
      Traceback (most recent call last):
      ...
      ValueError: Execution.driver must be one of 'auto', 'scan', 'chunks', 'python'; got 'loop'
    """

    strategy: str = "auto"
    lane_group_size: int | None = None
    shard_lanes: bool | None = None
    driver: str = "auto"
    chunk_size: int | None = None
    max_memory: float | None = None
    mesh: jax.sharding.Mesh | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        num.check_choice("Execution.strategy", self.strategy, _engine.STRATEGIES)
        _optional_count("Execution.lane_group_size", self.lane_group_size)
        if self.shard_lanes is not None and not isinstance(self.shard_lanes, bool):
            raise TypeError(
                f"Execution.shard_lanes must be True, False or None, got {self.shard_lanes!r}"
            )
        num.check_choice("Execution.driver", self.driver, _engine.DRIVER_CHOICES)
        _optional_count("Execution.chunk_size", self.chunk_size)
        if self.max_memory is not None:
            num.check_scalar("Execution.max_memory", self.max_memory)
            num.check_positive("Execution.max_memory", self.max_memory)
        if self.mesh is not None and not isinstance(self.mesh, jax.sharding.Mesh):
            raise TypeError(
                f"Execution.mesh must be a jax.sharding.Mesh or None, got {self.mesh!r}"
            )
        if self.mesh is not None and self.shard_lanes is False:
            raise ValueError(
                "Execution.shard_lanes=False contradicts Execution.mesh: the mesh splits the "
                "lanes over its 'lanes' axis; pass one or the other"
            )
        num.check_flag("Execution.progress", self.progress, allow_none=True)


def ramp_beta(num_steps: int, start_lr: float, end_lr: float) -> float:
    """``beta="auto"``: an EMA time constant of half the ramp's steps per decade (<= 0.98).

    Examples:
      >>> print(round(ramp_beta(100, 1e-7, 10.0), 3), ramp_beta(10_000, 1e-7, 10.0))
      0.852 0.98
    """
    _ramp.check_lr_range(start_lr, end_lr)
    steps_per_decade = num_steps / max(math.log10(float(end_lr) / float(start_lr)), 1e-12)
    return min(AUTO_BETA_MAX, math.exp(-2.0 / steps_per_decade))


@dataclasses.dataclass(frozen=True)
class Curve:
    r"""The range test's learning-rate ramp, loss smoothing and divergence rules.

    With ``s_t`` the smoothed loss and ``b_t`` its running minimum, a lane
    diverges at the first step where the loss is NaN/Inf, or
    :math:`s_t - b_t > (\tau - 1)|b_t|` (for positive losses exactly fastai's
    :math:`s_t > \tau b_t`), or it *rebounds*: with :math:`\bar\ell` the mean
    raw loss of the first tenth of the steps (at least 10), once the smoothed
    loss fell below :math:`\bar\ell` by more than ``rebound_min_drop`` of
    :math:`|\bar\ell|` and then climbed back more than ``diverge_rebound`` of
    that fall (a classifier collapsing back towards chance, which the
    :math:`\tau` rule misses; measured in ``docs/range_test.md``).

    Attributes:
      ramp: ``"exp"`` (geometric) or ``"linear"``.
      ramp_convention: ``"torch"``: step ``i`` uses position ``i / (num_steps - 1)``
        (torch-lr-finder; the last step uses ``end_lr``); ``"fastai"``:
        ``i / num_steps``.
      smoothing: ``"debiased_ema"`` (fastai: bias-corrected EMA) or ``"ema"``
        (torch-lr-finder: first value = first loss, no bias correction).
      beta: EMA coefficient in ``[0, 1)`` (fastai 0.98; torch-lr-finder's
        ``smooth_f=0.05`` is ``beta=0.95``; 0 disables smoothing), or
        ``"auto"``: tied to the ramp, an EMA time constant of half the steps per
        decade of learning rate, :math:`\beta = e^{-2/s}` with
        :math:`s = ` ``num_steps / log10(end_lr / start_lr)``, at most 0.98 (a
        fixed 0.98 over 100 steps and 8 decades lags the raw losses by a
        decade).
      diverge_threshold: :math:`\tau` (> 1) of the divergence rule (fastai 4,
        torch-lr-finder 5), or ``None``.
      diverge_rebound: the fraction (> 0) of its fall a rebounding loss climbs
        back before the lane is flagged, or ``None`` to turn the rule off (as
        fastai and torch-lr-finder have it). With ``diverge_threshold`` and
        this both ``None``, only NaN/Inf losses are flagged.
      rebound_min_drop: the fall, as a fraction of the start level, that arms
        the rebound rule (in ``[0, 1)``).

    Examples:
      >>> import clrjax
      >>> torch_lr_finder = clrjax.Curve(smoothing="ema", beta=0.95, diverge_threshold=5.0,
      ...                                diverge_rebound=None)
      >>> print(torch_lr_finder.beta, torch_lr_finder == clrjax.Curve())
      0.95 False
      >>> clrjax.Curve(beta=1.0)
      Traceback (most recent call last):
      ...
      ValueError: Curve.beta must be in [0, 1) or 'auto', got 1.0
    """

    ramp: str = "exp"
    ramp_convention: str = "torch"
    smoothing: str = "debiased_ema"
    beta: float | str = "auto"
    diverge_threshold: float | None = 4.0
    diverge_rebound: float | None = 0.5
    rebound_min_drop: float = 0.2

    def __post_init__(self) -> None:
        num.check_choice("Curve.ramp", self.ramp, _ramp.RAMPS)
        num.check_choice("Curve.ramp_convention", self.ramp_convention, _ramp.RAMP_CONVENTIONS)
        num.check_choice("Curve.smoothing", self.smoothing, _engine.SMOOTHINGS)
        if not (isinstance(self.beta, str) and self.beta == "auto"):
            num.check_scalar("Curve.beta", self.beta)
            if not 0 <= self.beta < 1:
                raise ValueError(f"Curve.beta must be in [0, 1) or 'auto', got {self.beta!r}")
        if self.diverge_threshold is not None:
            num.check_scalar("Curve.diverge_threshold", self.diverge_threshold)
            if not self.diverge_threshold > 1:
                raise ValueError(
                    f"Curve.diverge_threshold must be > 1 or None, got {self.diverge_threshold!r}"
                )
        if self.diverge_rebound is not None:
            num.check_scalar("Curve.diverge_rebound", self.diverge_rebound)
            num.check_positive("Curve.diverge_rebound", self.diverge_rebound)
        num.check_scalar("Curve.rebound_min_drop", self.rebound_min_drop)
        if not 0 <= self.rebound_min_drop < 1:
            raise ValueError(
                f"Curve.rebound_min_drop must be in [0, 1), got {self.rebound_min_drop!r}"
            )


def _check_dtype(compute_dtype: Any) -> np.dtype:
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError as e:
        raise TypeError(
            "Model.compute_dtype must be a floating dtype (e.g. jnp.bfloat16), got "
            f"{compute_dtype!r}"
        ) from e
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"Model.compute_dtype must be a floating dtype, got {dtype}")
    return dtype


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """What the loss function or train step needs besides parameters and a batch.

    Compared and hashed by identity (``state`` holds arrays). The train-step
    entry points (:func:`clrjax.range_test_step`,
    :func:`clrjax.find_schedule_step`) take ``init_fn`` and ``takes_rng`` only;
    :func:`clrjax.find_schedule` all but ``accumulation_steps``. A field set
    where it does not apply is refused, naming it.

    Attributes:
      init_fn: ``init_fn(lane_key) -> params`` (or the train state), replacing
        the ``params`` argument: every seed draws its own.
      state: initial mutable model state (e.g. BatchNorm statistics):
        ``loss_fn(params, state, batch) -> (loss, new_state)``, threaded
        through the steps, per lane.
      has_aux: ``loss_fn`` returns ``(loss, aux)`` (``(loss, (new_state, aux))``
        with ``state``); ``aux`` is ignored.
      takes_rng: ``loss_fn`` (or the train step) takes a PRNG key last,
        distinct per lane, step and micro-batch (dropout etc.).
      accumulation_steps: micro-batches per step; gradients and losses are
        averaged over them.
      compute_dtype: e.g. ``jnp.bfloat16``: params and floating batch leaves are
        cast for the forward/backward pass; gradients, master params and
        optimizer state keep their dtype. Stored as a NumPy dtype.

    Examples:
      >>> import jax.numpy as jnp, clrjax
      >>> model = clrjax.Model(takes_rng=True, compute_dtype=jnp.bfloat16)
      >>> print(model.compute_dtype, model.accumulation_steps)
      bfloat16 1
      >>> clrjax.Model(accumulation_steps=0)
      Traceback (most recent call last):
      ...
      ValueError: Model.accumulation_steps must be >= 1, got 0
    """

    init_fn: Callable[[jax.Array], Any] | None = None
    state: Any = None
    has_aux: bool = False
    takes_rng: bool = False
    accumulation_steps: int = 1
    compute_dtype: Any = None

    def __post_init__(self) -> None:
        _optional_callable("Model.init_fn", self.init_fn)
        num.check_arrays("Model.state", self.state)
        num.check_flag("Model.has_aux", self.has_aux)
        num.check_flag("Model.takes_rng", self.takes_rng)
        num.check_count("Model.accumulation_steps", self.accumulation_steps)
        if self.compute_dtype is not None:
            object.__setattr__(self, "compute_dtype", _check_dtype(self.compute_dtype))


_MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Model)}


@dataclasses.dataclass(frozen=True, eq=False)
class Validation:
    """The range test's validation set and how it is scored.

    Compared and hashed by identity (``data`` holds arrays).

    Attributes:
      data: validation data (a pytree of arrays shaped like the training
        data, or a list of batches), evaluated after the update of every
        ``every``-th step.
      every: validation period in steps.
      batch_size: validation batch size (default: the whole set at once; a
        remainder smaller than a batch is dropped).
      loss_fn: :func:`clrjax.range_test`'s validation loss (the protocol of its
        ``loss_fn``; default ``loss_fn``).
      step: :func:`clrjax.range_test_step`'s ``step(state, batch) -> metrics``
        (the loss read as from ``train_step``); required there.

    Examples:
      >>> import numpy as np, clrjax
      >>> x = np.zeros((64, 3), np.float32)
      >>> print(clrjax.Validation((x, x[:, 0]), every=10).every)
      10
      >>> clrjax.Validation((x, x[:, 0]), batch_size=0)
      Traceback (most recent call last):
      ...
      ValueError: Validation.batch_size must be >= 1, got 0
    """

    data: Any
    every: int = 1
    batch_size: int | None = None
    loss_fn: Callable[..., Any] | None = None
    step: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if self.data is None:
            raise ValueError("Validation.data must be given (the validation set)")
        num.check_count("Validation.every", self.every)
        _optional_count("Validation.batch_size", self.batch_size)
        _optional_callable("Validation.loss_fn", self.loss_fn)
        _optional_callable("Validation.step", self.step)


@dataclasses.dataclass(frozen=True)
class Search:
    """The range test :func:`clrjax.find_schedule` runs, its ``"decay"`` kind and its race.

    Attributes:
      range_test_steps: steps of the range test (>= 7: what the suggestions
        that propose the candidates need).
      start_lr: the range test's first learning rate (> 0).
      end_lr: the range test's last learning rate (> ``start_lr``).
      steps_per_epoch: steps of one epoch (``"decay"`` decays once per epoch;
        runs are scored after each); default ``len(data) // batch_size``, or
        for a stream of batches ``len(data)`` (required if it has no ``len``).
      decay_rate: the ``"decay"`` factor per epoch, in ``(0, 1]`` (the seed
        recipe's 0.97).
      val_batch_size: validation batch size of the race (default: all at once).
      max_extensions: the most peaks the race adds past the bracket's edges
        (>= 0): when a rung's leader has the top (bottom) peak raced for its
        kind and grid point, the next peak up (down) trains on that rung's
        budget and seeds before it ranks, within the range test's span
        (``start_lr`` to ``end_lr``: one-cycle's warm-up may train a peak the
        range test saw diverge; one that fails scores NaN and loses). ``0``:
        the bracket is final.
      metric_mode: ``"max"`` (the race maximises ``val_metric`` or
        ``metric_key``, e.g. accuracy) or ``"min"`` (it minimises it, e.g. an
        error); the validation loss, raced without a metric, is always
        minimised.

    Examples:
      >>> import clrjax
      >>> print(clrjax.Search(range_test_steps=50, start_lr=1e-4).end_lr)
      10.0
      >>> clrjax.Search(start_lr=1.0, end_lr=0.1)
      Traceback (most recent call last):
      ...
      ValueError: start_lr must be < end_lr, got start_lr=1.0, end_lr=0.1
    """

    range_test_steps: int = 100
    start_lr: float = 1e-5
    end_lr: float = 10.0
    steps_per_epoch: int | None = None
    decay_rate: float = 0.97
    val_batch_size: int | None = None
    max_extensions: int = 2
    metric_mode: str = "max"

    def __post_init__(self) -> None:
        num.check_count(
            "Search.range_test_steps", self.range_test_steps, minimum=MIN_RANGE_TEST_STEPS
        )
        num.check_count("Search.max_extensions", self.max_extensions, minimum=0)
        num.check_choice("Search.metric_mode", self.metric_mode, ("max", "min"))
        _ramp.check_lr_range(self.start_lr, self.end_lr)
        _optional_count("Search.steps_per_epoch", self.steps_per_epoch)
        num.check_scalar("Search.decay_rate", self.decay_rate)
        num.check_open_interval("Search.decay_rate", self.decay_rate, 0.0, 1.0 + 1e-12)
        _optional_count("Search.val_batch_size", self.val_batch_size)


def engine_request(
    execution: Execution, *, progress: bool, chunk_size: int | None = None, label: str = "lanes"
) -> _engine.Request:
    """The engine's :class:`~clrjax._engine.Request` for ``execution`` (the one place built).

    ``progress`` is resolved by the entry point; ``chunk_size`` replaces the
    execution's (the race runs an epoch per chunk); ``label`` names the progress bar.
    """
    return _engine.Request(
        strategy=execution.strategy,
        group=execution.lane_group_size,
        driver=execution.driver,
        chunk_size=execution.chunk_size if chunk_size is None else chunk_size,
        shard=execution.shard_lanes,
        mesh=execution.mesh,
        max_memory=execution.max_memory,
        progress=progress,
        label=label,
    )


def learning_rates(curve: Curve, start_lr: float, end_lr: float, num_steps: int) -> np.ndarray:
    """The ramp's learning rate of each step (float64)."""
    return _ramp.lr_ramp(start_lr, end_lr, num_steps, curve.ramp, curve.ramp_convention)


def engine_tracking(
    curve: Curve, num_steps: int, start_lr: float, end_lr: float
) -> _engine.Tracking:
    """The engine's :class:`~clrjax._engine.Tracking` for ``curve`` (the one place built)."""
    auto = isinstance(curve.beta, str)
    return _engine.Tracking(
        beta=ramp_beta(num_steps, start_lr, end_lr) if auto else curve.beta,
        threshold=math.inf if curve.diverge_threshold is None else curve.diverge_threshold,
        rebound=math.inf if curve.diverge_rebound is None else curve.diverge_rebound,
        rebound_drop=curve.rebound_min_drop,
        start_steps=max(REBOUND_MIN_START_STEPS, num_steps // 10),
    )


def check_model_applies(model: Model, entry_point: str, fields: tuple[str, ...]) -> None:
    """Raises ``ValueError`` naming the first of ``fields`` set to other than its default."""
    for field in fields:
        value, default = getattr(model, field), _MODEL_DEFAULTS[field]
        if value is not default if default is None else value != default:
            raise ValueError(
                f"Model.{field} does not apply to {entry_point}, got {value!r}"
                + (
                    ": a train step holds its own model state, loss outputs and dtypes"
                    if entry_point.endswith("_step")
                    else ""
                )
            )


_OPTION_CLASSES = {
    "execution": Execution,
    "curve": Curve,
    "model": Model,
    "validation": Validation,
    "search": Search,
}


def resolve(name: str, value: Any) -> Any:
    """``value``, or the defaults of option ``name`` for ``None``; ``TypeError`` for others."""
    cls = _OPTION_CLASSES[name]
    if value is None:
        return cls()
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a clrjax.{cls.__name__} or None, got {value!r}")
    return value


def moved_keywords(table: Mapping[str, tuple[str, str]]) -> Callable[[Callable], Callable]:
    """Decorates an entry point: a keyword of ``table`` raises ``TypeError`` naming its new home.

    ``table`` maps each removed keyword to ``(option argument, field)``; the
    decorated function keeps its signature and docstring, and lists the table
    in ``moved_keywords``.

    Examples:
      >>> @moved_keywords({"driver": ("execution", "driver")})
      ... def fit(*, execution=None):
      ...     return execution
      >>> try:
      ...     fit(driver="scan")
      ... except TypeError as e:
      ...     print(e)
      fit() got the keyword driver, which moved: pass execution=clrjax.Execution(driver=...)
    """
    table = types.MappingProxyType(dict(table))

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def entry_point(*args: Any, **kwargs: Any) -> Any:
            for keyword in kwargs.keys() & table.keys():
                option, field = table[keyword]
                raise TypeError(
                    f"{fn.__name__}() got the keyword {keyword}, which moved: pass "
                    f"{option}=clrjax.{_OPTION_CLASSES[option].__name__}({field}=...)"
                )
            return fn(*args, **kwargs)

        entry_point.moved_keywords = table
        return entry_point

    return decorate


def moved_to(option: str, names: str) -> dict[str, tuple[str, str]]:
    """A :func:`moved_keywords` table of keywords that kept their names as fields of ``option``."""
    return {name: (option, name) for name in names.split()}


EXECUTION_KEYWORDS = moved_to(
    "execution", "strategy lane_group_size shard_lanes driver chunk_size max_memory mesh progress"
)
CURVE_KEYWORDS = moved_to(
    "curve",
    "ramp ramp_convention smoothing beta diverge_threshold diverge_rebound rebound_min_drop",
)
VALIDATION_KEYWORDS = {
    "val_data": ("validation", "data"),
    "val_every": ("validation", "every"),
    "val_batch_size": ("validation", "batch_size"),
}
SEARCH_KEYWORDS = moved_to(
    "search", "range_test_steps start_lr end_lr steps_per_epoch decay_rate val_batch_size"
)
