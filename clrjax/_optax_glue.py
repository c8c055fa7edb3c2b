"""Optax glue: one ``GradientTransformation`` from an optimizer factory plus schedules.

:func:`scheduled` is a thin, stricter front end to :func:`optax.inject_hyperparams`:
it validates hyperparameter names against the factory's signature when the
optimizer is built, decides which arguments are static in a way that suits
optax's own factories (flags, dtypes and ``mask`` are static), and keeps the
hyperparameters' dtype fixed at ``init`` so the optimizer state never changes
type between steps (see the notes in :func:`scheduled`).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clrjax import _numerics

# Parameters that optax factories use for structure, never as a hyperparameter:
# ``mask`` is a pytree of booleans or a callable ``params -> mask``.
_ALWAYS_STATIC = frozenset({"mask"})

# Our own keyword options; a factory parameter of the same name cannot be passed.
_OPTIONS = ("static_args", "hyperparam_dtype")


def _is_dtype_like(value: Any) -> bool:
    """True for dtypes and scalar types such as ``jnp.float32`` (callable, not schedules)."""
    return isinstance(value, (type, np.dtype))


def _is_numeric_constant(value: Any) -> bool:
    """True for values inject_hyperparams stores in ``state.hyperparams``."""
    return not isinstance(value, bool) and isinstance(
        value, (int, float, np.number, np.ndarray, jax.Array)
    )


def _hyperparam_dtype_of(state: Any, names: Iterable[str]) -> Any:
    """The floating dtype the hyperparameters in ``names`` have in ``state``, or None.

    ``names`` are the entries inject_hyperparams casts itself (schedules, and
    constants given as Python or NumPy numbers), so their dtype is the one
    chosen at ``init``; values written into ``state.hyperparams`` by hand as
    Python numbers carry no dtype and are skipped.
    """
    dtypes = set()
    for name in names:
        value = state.hyperparams.get(name)
        if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating):
            dtypes.add(jnp.dtype(value.dtype))
    if not dtypes:
        return None
    return jnp.result_type(*dtypes)


def _is_strong_jax_array(value: Any) -> bool:
    return isinstance(value, jax.Array) and not getattr(value, "weak_type", False)


def _check_float_dtype(dtype: Any) -> None:
    """Raises ``TypeError`` unless ``dtype`` names a floating dtype."""
    try:
        ok = not isinstance(dtype, bool) and jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TypeError(f"hyperparam_dtype must be a floating dtype or None, got {dtype!r}")


def _accepts_none(parameter: inspect.Parameter) -> bool:
    """False when the parameter's annotation rules ``None`` out (no annotation: True).

    ``optax.adafactor(clipping_threshold: Optional[float] = 1.0)`` takes None;
    ``optax.adamw(b1: ArrayLike = 0.9)`` does not.
    """
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty or annotation is None:
        return True
    if isinstance(annotation, str):  # postponed (from __future__ import annotations)
        return "None" in annotation or "Optional" in annotation
    return type(None) in typing.get_args(annotation)


def _accepted_names(signature: inspect.Signature) -> tuple[str, ...]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(name for name, p in signature.parameters.items() if p.kind in kinds)


def scheduled(
    optimizer_factory: Callable[..., optax.GradientTransformation],
    /,
    *,
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
    **hyperparams: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""Builds ``optimizer_factory(**hyperparams)`` with schedules for any hyperparameter.

    Each keyword is one of the factory's parameters and is treated as:

    * a **schedule** if it is callable (``step -> value``, e.g. any clrjax or optax
      schedule): at the :math:`t`-th update (:math:`t = 0, 1, \dots`) the
      optimizer runs with the value ``schedule(t)``, the same convention as
      ``optax.sgd(learning_rate=schedule)`` and PyTorch's
      ``optimizer.step(); scheduler.step()`` loop;
    * a **numeric constant** (Python ``int``/``float``, NumPy scalar or array, JAX array,
      including a tracer, e.g. under ``jax.vmap``): stored in the state, where
      it can be read or overwritten between steps;
    * **static** otherwise: booleans (``nesterov``), ``None``, dtypes
      (``accumulator_dtype=jnp.float32``), the ``mask`` argument of optax's
      weight-decay optimizers, strings for parameters whose default is a string
      (``optax.polyak_sgd(variant="sps")``), and every name listed in
      ``static_args``. Static arguments are baked into the compiled step. A
      parameter whose default is a number takes no static value (``None`` only
      where its annotation allows it) unless it is named in ``static_args``.

    The returned transformation is built on :func:`optax.inject_hyperparams`; its
    state is an ``optax.InjectStatefulHyperparamsState`` whose ``hyperparams``
    dict holds, for every scheduled or numeric hyperparameter, the value used by
    the most recent update (``schedule(0)`` right after ``init``), which makes
    it the place to log the current learning rate or momentum from. Inside
    ``optax.chain`` the state is one element of the chain's tuple (e.g.
    ``state[1].hyperparams["learning_rate"]``); to find it at any depth use
    ``optax.tree.get(state, "learning_rate", filtering=lambda _, v: isinstance(v, jax.Array))``
    (the filter skips the schedule's own counter, stored under the same name).

    Notes:
      * ``optax.sgd(momentum=None)`` (the default) has no momentum buffer at all,
        ``momentum=0.0`` has a buffer with decay 0. A momentum *schedule* always
        builds the buffer (``trace``), so cyclical momentum needs nothing else;
        pass ``momentum=None`` (or leave it out) only when no momentum is wanted.
      * Hyperparameters are cast at ``init`` to ``hyperparam_dtype`` or, if that is
        None, to the highest floating dtype of the params, and keep that dtype
        in every update, whether or not ``update`` receives ``params`` (plain
        :func:`optax.inject_hyperparams` falls back to JAX's default float when
        ``params`` is missing, which changes the state's type between steps and
        upcasts bfloat16 updates). With bfloat16 params pass
        ``hyperparam_dtype=jnp.float32``: bfloat16 rounds ``0.999`` to ``1.0``.
      * Integer constants stay integers; callables that are not schedules must be
        named in ``static_args``.
      * Schedules receive the update count as an ``int32`` array, which saturates
        at ``2**31 - 1`` instead of wrapping.

    Args:
      optimizer_factory: an optax optimizer or transformation factory, e.g.
        ``optax.sgd``, ``optax.adamw``, ``optax.add_decayed_weights``.
      static_args: extra parameter names to pass through unchanged (e.g. a
        callable that is not a schedule).
      hyperparam_dtype: floating dtype for the hyperparameters; None follows the
        params.
      **hyperparams: the factory's arguments, each a schedule, a number or a
        static value.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; it composes with
      ``optax.chain`` and works inside ``jax.jit``, ``jax.vmap`` and ``lax.scan``.

    Raises:
      TypeError: if ``optimizer_factory`` is not callable or has no signature,
        a name is not one of its keyword-accepting parameters (the message
        lists those), a required parameter is missing, a numeric constant is
        not a number, a string is given for a parameter whose default is not a
        string (e.g. ``learning_rate="0.1"``), or a static value for one whose
        default is a number (e.g. ``b1=[0.9]`` for ``optax.adamw``), and that
        is not named in ``static_args``; if ``static_args`` is not a name or
        names, or ``hyperparam_dtype`` not a floating dtype.
      ValueError: if a numeric constant is NaN or infinite, or overflows the
        float dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import clrjax
      >>> opt = clrjax.scheduled(
      ...     optax.sgd,
      ...     learning_rate=lambda t: 0.1 * 0.5**t,
      ...     momentum=lambda t: 0.8 + 0.05 * t,
      ...     nesterov=True,
      ... )
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     updates, state = opt.update(jnp.ones(2), state, params)
      ...     params = optax.apply_updates(params, updates)
      ...     hp = state.hyperparams
      ...     print(f"lr={float(hp['learning_rate']):.4f} mom={float(hp['momentum']):.2f}")
      lr=0.1000 mom=0.80
      lr=0.0500 mom=0.85
      lr=0.0250 mom=0.90

      Unknown names fail early and list what the factory accepts:

      >>> clrjax.scheduled(optax.sgd, learning_rate=0.1, beta=0.9)
      Traceback (most recent call last):
      ...
      TypeError: sgd() has no parameter 'beta'; it accepts: learning_rate, momentum, ...
    """
    if not callable(optimizer_factory):
        raise TypeError(f"optimizer_factory must be callable, got {optimizer_factory!r}")
    factory_name = getattr(optimizer_factory, "__name__", repr(optimizer_factory))
    try:
        signature = inspect.signature(optimizer_factory)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"optimizer_factory must be a function with a signature to check the "
            f"hyperparameters against, got {optimizer_factory!r}"
        ) from e
    accepted = _accepted_names(signature)
    static_args = {static_args} if isinstance(static_args, str) else static_args
    if not isinstance(static_args, Iterable) or not all(isinstance(n, str) for n in static_args):
        raise TypeError(f"static_args must be a name or an iterable of names, got {static_args!r}")
    static_args = set(static_args)
    if hyperparam_dtype is not None:
        _check_float_dtype(hyperparam_dtype)

    for name in sorted(set(hyperparams) | static_args):
        if name not in accepted:
            raise TypeError(
                f"{factory_name}() has no parameter {name!r}; it accepts: {', '.join(accepted)}"
            )
    clashes = [name for name in _OPTIONS if name in accepted]
    if clashes:
        raise TypeError(
            f"{factory_name}() has a parameter named {clashes[0]!r}, which scheduled() "
            "reserves for its own options; wrap the factory to rename it"
        )
    try:
        signature.bind(**hyperparams)
    except TypeError as e:
        raise TypeError(f"{factory_name}(): {e}") from e

    for name, value in hyperparams.items():
        default = signature.parameters[name].default
        if _is_numeric_constant(value):
            _numerics.check_float(name, value)
        elif (
            isinstance(value, (str, bytes))
            and name not in static_args
            and not isinstance(default, (str, bytes))
        ):
            # e.g. learning_rate="0.1", which would only fail at the first update.
            raise TypeError(
                f"{name} must be a number, an array or a schedule, got {value!r} (a string "
                f"is passed only where {factory_name}() has a string default, or with "
                "static_args)"
            )
        elif (
            _is_numeric_constant(default)
            and name not in static_args
            and (_is_dtype_like(value) or not callable(value))
            and not (value is None and _accepts_none(signature.parameters[name]))
        ):
            # e.g. b1=None, b1=[0.9], b1=True or b1=jnp.float32 where optax.adamw() has
            # b1=0.9: a static value that would only fail inside the optimizer.
            raise TypeError(
                f"{name} must be a number, an array or a schedule (the default of "
                f"{factory_name}() is {default!r}), got {value!r}"
            )
    # inject_hyperparams would treat NumPy scalars such as np.float32(0.1) as static.
    hyperparams = {
        name: np.asarray(value) if isinstance(value, np.number) else value
        for name, value in hyperparams.items()
    }
    static = (
        static_args
        | (_ALWAYS_STATIC & set(accepted))
        | {name for name, value in hyperparams.items() if _is_dtype_like(value)}
    )
    # Entries whose dtype inject_hyperparams sets (strong JAX arrays keep theirs).
    cast_names = tuple(
        name
        for name, value in hyperparams.items()
        if name not in static
        and (callable(value) or (_is_numeric_constant(value) and not _is_strong_jax_array(value)))
    )

    def build(dtype: Any) -> optax.GradientTransformationExtraArgs:
        injected = optax.inject_hyperparams(
            optimizer_factory, static_args=static, hyperparam_dtype=dtype
        )
        return injected(**hyperparams)

    def init_fn(params: optax.Params) -> optax.OptState:
        return build(hyperparam_dtype).init(params)

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.OptState]:
        dtype = hyperparam_dtype
        if dtype is None:
            dtype = _hyperparam_dtype_of(state, cast_names)
        return build(dtype).update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
