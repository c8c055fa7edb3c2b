"""A lane that trains ``params`` with a loss function and an Optax optimizer.

The task behind :func:`clrjax.range_test` and :func:`clrjax.find_schedule`:
``loss_fn(params, batch)`` (optionally with model state and a PRNG key) and an
optimizer given as a factory ``(learning_rate, **hparams) ->
GradientTransformation`` (called at every step with the lane's traced values)
or as an ``optax.inject_hyperparams`` optimizer (whose injected values are set
in its state at every step).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from clrjax import _injected
from clrjax._engine import held

TRAIN_STEP_HINT = (
    "it looks like a train step train_step(state, batch) -> (state, metrics); range_test "
    "expects loss_fn(params, batch) -> loss: use clrjax.range_test_step for train steps"
)


class LossState(NamedTuple):
    """One lane's train state.

    Attributes:
      params: the parameters.
      opt_state: the optimizer state.
      model_state: mutable model state (e.g. BatchNorm statistics), or ``None``.
    """

    params: Any
    opt_state: Any
    model_state: Any


def _is_float_array(x: Any) -> bool:
    """A floating array (or its shape): a parameter; the other leaves are held fixed."""
    return hasattr(x, "shape") and hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)


def _cast_floats(tree: Any, dtype: Any) -> Any:
    if dtype is None:
        return tree
    return jax.tree.map(lambda a: a.astype(dtype) if _is_float_array(a) else a, tree)


def _is_scalar_float(value: Any) -> bool:
    return (
        (hasattr(value, "dtype") or isinstance(value, float))
        and jnp.shape(value) == ()
        and jnp.issubdtype(jnp.result_type(value), jnp.floating)
    )


@dataclasses.dataclass(frozen=True)
class LossTask:
    """``loss_fn`` + optimizer as an engine :class:`~clrjax._engine.task.Task`.

    Attributes:
      loss_fn: ``loss_fn(params, [model_state,] batch, [key]) -> loss``, or
        ``(loss, aux)`` with ``has_aux``, ``(loss, new_model_state)`` with
        ``stateful``, ``(loss, (new_model_state, aux))`` with both.
      optimizer: a factory ``(learning_rate, **hparams) -> GradientTransformation``
        or an ``optax.inject_hyperparams`` ``GradientTransformation``.
      val_loss_fn: the loss on validation batches (same protocol).
      val_metric: ``val_metric(params, [model_state,] batch) -> scalar`` (higher
        is better), reported as ``"metric"`` beside ``"loss"``; or ``None``.
      has_aux: ``loss_fn`` returns an auxiliary output (ignored).
      takes_rng: ``loss_fn`` takes a PRNG key last.
      stateful: ``loss_fn`` takes and returns model state.
      compute_dtype: dtype of params and floating batch leaves in the forward
        pass (``None``: unchanged); gradients, params and optimizer state keep
        theirs.
      accumulation_steps: micro-batches per step (batch leaves then carry a
        leading micro-batch axis); gradients and losses are averaged.
      init_fn: ``init_fn(lane_key) -> params`` replacing the shared params, or
        ``None``.
    """

    loss_fn: Callable[..., Any]
    optimizer: Any
    val_loss_fn: Callable[..., Any]
    val_metric: Callable[..., Any] | None = None
    has_aux: bool = False
    takes_rng: bool = False
    stateful: bool = False
    compute_dtype: Any = None
    accumulation_steps: int = 1
    init_fn: Callable[[jax.Array], Any] | None = None

    @property
    def injected(self) -> bool:
        """The optimizer is a ``GradientTransformation`` with injected hyperparameters."""
        return isinstance(self.optimizer, optax.GradientTransformation)

    def _tx(self, hparams: Mapping[str, jax.Array]) -> optax.GradientTransformation:
        if self.injected:
            return self.optimizer
        tx = self.optimizer(**hparams)
        if not isinstance(tx, optax.GradientTransformation):
            raise TypeError(
                f"optimizer: the factory {getattr(self.optimizer, '__name__', self.optimizer)!r} "
                f"returned {_describe(tx)}, not an optax.GradientTransformation"
            )
        return tx

    def _hparams(self, hparams: Mapping[str, Any], params: Any) -> dict[str, jax.Array]:
        """Hyperparameters in the params' floating dtype (a float64 LR never promotes state).

        An injected optimizer's state has its own dtype (``hyperparam_dtype``),
        which :func:`~clrjax._injected.set_hyperparams` casts to: no rounding to
        the params' bfloat16 on the way.
        """
        if self.injected:
            return dict(hparams)
        dtype = optax.tree.dtype(params, "highest")
        return {k: jnp.asarray(v).astype(dtype) for k, v in hparams.items()}

    def init(self, start: Any, hparams: Mapping[str, jax.Array], key: jax.Array) -> LossState:
        """``start`` is ``(params, model_state)``; ``params`` is ``None`` with ``init_fn``.

        Only the floating arrays of ``params`` are trained (the optimizer sees
        them alone); its other leaves, such as an Equinox module's activation,
        are held fixed, as ``eqx.partition(params, eqx.is_inexact_array)`` does.
        """
        params, model_state = held.copy_arrays(start)
        if self.init_fn is not None:
            params = self.init_fn(key)
        arrays, _ = held.partition(params, _is_float_array)
        hparams = self._hparams(hparams, arrays)
        opt_state = self._tx(hparams).init(arrays)
        if self.injected:
            opt_state = _injected.set_hyperparams(opt_state, hparams)
        elif _injected.injected_hyperparams(opt_state):
            # Anywhere in the state (also inside optax.chain): its update reads the
            # hyperparameters from the state, so the factory's arguments would be ignored.
            raise ValueError(
                "optimizer: the factory builds an optax.inject_hyperparams optimizer, whose "
                "state would override the learning rate; pass the plain factory (e.g. "
                "optax.adam), or the inject_hyperparams optimizer itself (not a factory)"
            )
        return LossState(params, opt_state, model_state)

    def call_loss(self, fn: Callable[..., Any], params, model_state, batch, key, name="loss_fn"):
        """Calls ``fn`` per the protocol; returns ``(float32 scalar loss, new model state)``."""
        args = [_cast_floats(params, self.compute_dtype)]
        if self.stateful:
            args.append(model_state)
        args.append(_cast_floats(batch, self.compute_dtype))
        if self.takes_rng:
            args.append(key)
        out = fn(*args)
        if self.has_aux or self.stateful:
            expected = "(loss, new_state)" if self.stateful else "(loss, aux)"
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError(f"{name} must return {expected}, got {_describe(out)}")
            loss, rest = out
            if self.stateful:
                model_state = rest[0] if self.has_aux else rest
        else:
            loss = out
            if isinstance(out, (tuple, list)):
                hint = (
                    TRAIN_STEP_HINT
                    if len(out) == 2 and not _is_scalar_float(out[0])
                    else "pass has_aux=True for (loss, aux), or state=... for (loss, new_state)"
                )
                raise ValueError(
                    f"{name} returned a {type(out).__name__} of {len(out)} values, not a "
                    f"scalar loss; {hint}"
                )
        if not _is_scalar_float(loss):
            raise ValueError(f"{name} must return a floating scalar loss, got {_describe(loss)}")
        return jnp.asarray(loss, jnp.float32), model_state

    def step(
        self, state: LossState, batch: Any, hparams: Mapping[str, jax.Array], key: jax.Array
    ) -> tuple[LossState, jax.Array]:
        params, fixed = held.partition(state.params, _is_float_array)

        def objective(p, model_state, mb, k):
            return self.call_loss(self.loss_fn, held.combine(p, fixed), model_state, mb, k)

        grad_fn = jax.value_and_grad(objective, has_aux=True)
        if self.accumulation_steps == 1:  # no loop: XLA:CPU runs convolutions in loops ~10x slower
            (loss, model_state), grads = grad_fn(params, state.model_state, batch, key)
        else:

            def accumulate(carry, mb):
                grads, loss_sum, model_state, i = carry
                (loss, model_state), g = grad_fn(
                    params, model_state, mb, jax.random.fold_in(key, i)
                )
                return (jax.tree.map(jnp.add, grads, g), loss_sum + loss, model_state, i + 1), None

            zeros = jax.tree.map(jnp.zeros_like, params)
            init = (zeros, jnp.zeros((), jnp.float32), state.model_state, jnp.zeros((), jnp.int32))
            (grads, loss_sum, model_state, _), _ = jax.lax.scan(accumulate, init, batch)
            grads = jax.tree.map(lambda g: g / self.accumulation_steps, grads)
            loss = loss_sum / self.accumulation_steps
        hparams = self._hparams(hparams, params)
        opt_state = state.opt_state
        if self.injected:
            opt_state = _injected.set_hyperparams(opt_state, hparams)
        updates, opt_state = self._tx(hparams).update(grads, opt_state, params)
        params = held.combine(optax.apply_updates(params, updates), fixed)
        return LossState(params, opt_state, model_state), loss

    def evaluate(self, state: LossState, batch: Any, key: jax.Array) -> dict[str, jax.Array]:
        loss, _ = self.call_loss(
            self.val_loss_fn, state.params, state.model_state, batch, key, "val_loss_fn"
        )
        scores = {"loss": loss}
        if self.val_metric is not None:
            args = (state.params, state.model_state) if self.stateful else (state.params,)
            metric = self.val_metric(*_cast_floats(args, self.compute_dtype), batch)
            if not _is_scalar_float(metric) and not (
                hasattr(metric, "dtype") and jnp.shape(metric) == ()
            ):
                raise ValueError(f"val_metric must return a scalar, got {_describe(metric)}")
            scores["metric"] = jnp.asarray(metric, jnp.float32)
        return scores


def check_params(name: str, params: Any) -> None:
    """Raises ``TypeError`` unless ``params`` holds floating arrays to train (not a train state).

    Leaves that are not arrays (an Equinox module's activation, a Python
    number) are held fixed; array leaves must be floating.
    """
    is_opt_state = lambda x: type(x).__module__.startswith("optax") and hasattr(x, "_fields")
    opt_states = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params, is_leaf=is_opt_state)
        if is_opt_state(leaf)
    ]
    if any(hasattr(params, a) for a in ("opt_state", "apply_gradients", "tx")) or opt_states:
        where = f" (an optimizer state at {name}{opt_states[0]})" if opt_states else ""
        raise TypeError(
            f"{name} is a train state ({type(params).__name__}){where}, not parameters; "
            "range_test expects loss_fn(params, batch) and the params: use "
            "clrjax.range_test_step(train_step, train_state, data) for a train step and its state"
        )
    arrays = [
        (path, leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype")
    ]
    if not arrays:
        raise TypeError(
            f"{name} holds no array to train, got {_describe(params)}; leaves that are not "
            "arrays (Python numbers, functions) are held fixed: pass the parameters as arrays, "
            "e.g. jnp.asarray(1.0)"
        )
    for path, leaf in arrays:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)} has dtype {dtype}; every parameter must be "
                "floating. Pass non-trainable leaves (integer counters, PRNG keys, e.g. nnx "
                "RngState) through state=..., e.g. nnx.split(model, nnx.Param, ...); a train "
                "state with its own train step goes to clrjax.range_test_step"
            )


def check_optimizer(optimizer: Any, names: Iterable[str], params: Any) -> None:
    """Raises unless ``optimizer`` can take ``learning_rate`` and ``names`` per lane and step.

    A factory must accept them as arguments; a ``GradientTransformation`` must
    have injected them (``optax.inject_hyperparams``) as constants.
    """
    names = tuple(names)
    if isinstance(optimizer, optax.GradientTransformation):
        state = jax.eval_shape(optimizer.init, held.partition(params, _is_float_array)[0])
        _injected.check_injected(state, ("learning_rate", *names), "optimizer")
        return
    if not callable(optimizer):
        raise TypeError(
            "optimizer must be a factory (learning_rate, **hparams) -> GradientTransformation "
            f"or an optax.inject_hyperparams optimizer, got {optimizer!r}"
        )
    check_factory(optimizer, names)


def check_factory(optimizer: Callable[..., Any], names: Iterable[str]) -> None:
    """Raises ``ValueError`` if ``optimizer(learning_rate=..., **{name: ...})`` is impossible."""
    try:
        params = inspect.signature(optimizer).parameters
    except (TypeError, ValueError):  # builtins without a signature: trust the caller
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    for name in names:
        if isinstance(params.get(name, None), inspect.Parameter) and isinstance(
            params[name].default, bool
        ):
            raise ValueError(
                f"grid: {name!r} is a flag of the optimizer factory (default "
                f"{params[name].default!r}), not a number; fix it in the factory instead, e.g. "
                f"optimizer=functools.partial(factory, {name}=...)"
            )
    for name in ("learning_rate", *names):
        if name not in accepted:
            what = "optimizer" if name == "learning_rate" else "grid"
            raise ValueError(
                f"{what}: the optimizer factory {getattr(optimizer, '__name__', optimizer)!r} "
                f"has no argument {name!r} (it accepts {sorted(accepted)})"
            )


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, Mapping):
        return f"a {type(value).__name__} with keys {sorted(map(str, value))}"
    return f"a {type(value).__name__}"
