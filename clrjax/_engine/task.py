"""What one lane trains: the protocol between the applications and the engine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import jax


class Task(Protocol):
    """One lane's training, as three pure functions of a single (unbatched) lane.

    The engine maps them over the lanes (``vmap``, ``lax.map``, sharding) and
    drives them through the steps; a task never sees the lane axis. Tasks are
    hashable (frozen dataclasses of the user's functions and static flags): the
    compiled program is cached per task, so a task must compare equal exactly
    when it compiles to the same program.

    ``hparams`` is the lane's hyperparameters at the current step, a dict of
    scalars: ``"learning_rate"`` and any grid or scheduled value (for example
    ``"weight_decay"``, ``"momentum"``), in the dtype the engine was given.
    """

    def init(self, start: Any, hparams: Mapping[str, jax.Array], key: jax.Array) -> Any:
        """The lane's train state at step 0, built from ``start``.

        ``start`` is what the application handed the engine (shared by all lanes,
        or this lane's slice of it); the result must not alias it (copies, so the
        user's arrays can never be donated). ``hparams`` are step 0's values.
        """
        ...

    def step(
        self, state: Any, batch: Any, hparams: Mapping[str, jax.Array], key: jax.Array
    ) -> tuple[Any, jax.Array]:
        """One optimizer step: ``(new state, float32 scalar training loss)``.

        The new state must have the structure and dtypes of ``state``.
        """
        ...

    def evaluate(self, state: Any, batch: Any, key: jax.Array) -> Any:
        """Scores on one validation batch: a pytree of float32 scalars (averaged over batches)."""
        ...
