"""The comparison's task registry: :data:`TASKS` (dataset, model, budget and
hand-picked arms of each), the :class:`Arm` type and :func:`demo_problem`, a
task's dataset and MLP."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from clrjax.demo import _data as _demo_data

ARM_KINDS = ("constant", "decay", "one_cycle")


class DemoTask(NamedTuple):
    """A model and training budget on one of the demo datasets.

    Attributes:
      name: the task's name (a key of :data:`TASKS`).
      dataset: one of :data:`clrjax.demo.DATASETS`.
      hidden: hidden layer widths of the ReLU MLP.
      batch_size: examples per step.
      epochs: epochs of the whole training split (the budget).
      hand_picked: ``(kind, learning rate)`` arms trained beside the others.
    """

    name: str
    dataset: str
    hidden: tuple[int, ...]
    batch_size: int
    epochs: int
    hand_picked: tuple[tuple[str, float], ...] = ()


TASKS = {
    "digits": DemoTask("digits", "digits", (64,), 32, 30, (("decay", 0.1),)),
    # The task; the hand-picked grid surrounds the best cells of a wider one.
    "mnist1d": DemoTask(
        "mnist1d",
        "mnist1d",
        (256, 256),
        128,
        60,
        (
            ("constant", 0.1),
            ("decay", 0.2),
            ("decay", 0.3),
            ("decay", 0.4),
            ("one_cycle", 0.2),
            ("one_cycle", 0.4),
        ),
    ),
    # Held out: nothing in find_schedule was tuned on it.
    "mnist1d_w128": DemoTask(
        "mnist1d_w128", "mnist1d", (128, 128), 64, 40, (("decay", 0.1), ("one_cycle", 0.2))
    ),
}


class Arm(NamedTuple):
    """One training configuration.

    Attributes:
      name: e.g. ``"baseline"``, ``"minimum + decay"``, ``"hand-picked decay 0.3"``.
      kind: one of :data:`ARM_KINDS`.
      lr: the constant, initial (decay) or peak (one-cycle) learning rate.
      source: ``"baseline"``, ``"suggestion"``, ``"find_schedule"`` or ``"hand-picked"``.
    """

    name: str
    kind: str
    lr: float
    source: str


def demo_problem(
    dataset: str, hidden: Sequence[int], data_seed: int = 0
) -> tuple[_demo_data.Dataset, Callable[[jax.Array], Any], tuple[int, ...]]:
    """The dataset, ``init_fn(key) -> MLP params`` and the MLP's layer widths."""
    data = _demo_data.load_dataset(dataset, seed=data_seed)
    sizes = (data.x_train.shape[1], *hidden, data.num_classes)
    return data, functools.partial(_demo_data.init_mlp, sizes=sizes), sizes
