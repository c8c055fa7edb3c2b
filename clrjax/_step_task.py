"""A lane that runs the user's own ``train_step(state, batch) -> (state, metrics)``.

The task behind :func:`clrjax.range_test_step`: before every step the lane's
learning rate (and its grid values) are written into the hyperparameters the
state's optimizer injected with ``optax.inject_hyperparams``
(:mod:`clrjax._injected`); the step runs unchanged; the loss is read from its
metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from clrjax import _injected
from clrjax._engine import held

STATEFUL = (
    "a step that updates its objects in place and returns only the loss (Flax NNX's "
    "stateful style: nnx.jit, optimizer.update(model, grads)) has no state to hand back: "
    "write it in the functional form, graphdef, state = nnx.split((model, optimizer)) once, "
    "then in the step model, optimizer = nnx.merge(graphdef, state), update them and "
    "return nnx.state((model, optimizer)), loss"
)


def read_loss(metrics: Any, loss_key: str, what: str) -> jax.Array:
    """The float32 scalar loss in a step's ``metrics`` (a scalar, or ``metrics[loss_key]``)."""
    loss = metrics
    if isinstance(metrics, Mapping):
        if loss_key not in metrics:
            raise ValueError(
                f"{what} returned metrics with keys {sorted(map(str, metrics))} and no "
                f"{loss_key!r}; name the loss with loss_key=..."
            )
        loss = metrics[loss_key]
    if not (
        hasattr(loss, "dtype")
        and jnp.shape(loss) == ()
        and jnp.issubdtype(jnp.result_type(loss), jnp.floating)
    ):
        raise ValueError(
            f"{what} must report a floating scalar loss (the metrics themselves, or "
            f"metrics[{loss_key!r}]); got {type(loss).__name__} {getattr(loss, 'shape', '')}"
        )
    return jnp.asarray(loss, jnp.float32)


@dataclasses.dataclass(frozen=True)
class StepTask:
    """The user's train step as an engine :class:`~clrjax._engine.task.Task`.

    Attributes:
      train_step: ``train_step(state, batch[, key]) -> (state, metrics)``.
      val_step: ``val_step(state, batch) -> metrics`` on validation batches (the
        loss read as from ``train_step``'s metrics), or ``None``.
      loss_key: the entry of mapping metrics that holds the loss.
      takes_rng: ``train_step`` takes a PRNG key last (distinct per step and lane).
      init_fn: ``init_fn(lane_key) -> state`` replacing the shared start state, or ``None``.
      metric_key: the entry of ``val_step``'s metrics reported as ``"metric"``
        (higher is better), or ``None``.
    """

    train_step: Callable[..., Any]
    val_step: Callable[..., Any] | None = None
    loss_key: str = "loss"
    takes_rng: bool = False
    init_fn: Callable[[jax.Array], Any] | None = None
    metric_key: str | None = None

    def init(self, start: Any, hparams: Mapping[str, jax.Array], key: jax.Array) -> Any:
        if self.init_fn is not None:
            start = self.init_fn(key)
        return _injected.set_hyperparams(held.copy_arrays(start), hparams)

    def step(
        self, state: Any, batch: Any, hparams: Mapping[str, jax.Array], key: jax.Array
    ) -> tuple[Any, jax.Array]:
        state = _injected.set_hyperparams(state, hparams)
        out = (
            self.train_step(state, batch, key) if self.takes_rng else self.train_step(state, batch)
        )
        if not (isinstance(out, tuple) and len(out) == 2):
            got = type(out).__name__ + (f" of {len(out)} values" if isinstance(out, tuple) else "")
            if hasattr(out, "shape") and hasattr(out, "dtype"):  # an array, or its tracer
                got = f"a single array of shape {tuple(out.shape)} and dtype {out.dtype}; "
                got += STATEFUL
            raise ValueError(f"train_step must return (new_state, metrics), got {got}")
        new_state, metrics = out
        return new_state, read_loss(metrics, self.loss_key, "train_step")

    def evaluate(self, state: Any, batch: Any, key: jax.Array) -> dict[str, jax.Array]:
        metrics = self.val_step(state, batch)
        scores = {"loss": read_loss(metrics, self.loss_key, "val_step")}
        if self.metric_key is not None:
            scores["metric"] = read_loss(metrics, self.metric_key, "val_step")
        return scores
