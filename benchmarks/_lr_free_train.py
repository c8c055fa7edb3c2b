"""One trainer for every method of ``bench_vs_lr_free.py``: lanes vmapped or mapped, steps scanned.

A lane is one (configuration, seed) run. Its seed fixes its initial
parameters, its data order (a fresh permutation every pass over the data) and
its dropout keys, the same for every method, so methods compare seed by seed.
Scheduled hyperparameters (the learning rate, the momentum or ``b1``) are given
per lane and step and written into an ``optax.inject_hyperparams`` state
before each step; the learning-rate-free optimizers run unscheduled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _lr_free_tasks import Task


class Lane(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array
    bad: jax.Array  # the loss turned NaN/Inf at some step


@dataclasses.dataclass(frozen=True, eq=False)
class Method:
    """How to build one method's optimizer.

    Attributes:
      tx: the optimizer (``inject_hyperparams`` when ``scheduled`` is non-empty).
      scheduled: the injected hyperparameters given per step.
      eval_params: ``eval_params(opt_state, params) -> params`` to score
        (schedule-free's averaged point), or ``None``: the parameters.
    """

    tx: optax.GradientTransformation
    scheduled: tuple[str, ...] = ()
    eval_params: Callable[[Any, Any], Any] | None = None


def scheduled_method(task: Task) -> Method:
    """The task's optimizer with its learning rate and momentum/``b1`` injected."""
    tx = optax.inject_hyperparams(task.factory)(
        learning_rate=1e-3, **{task.momentum_name: task.base_momentum}
    )
    return Method(tx, ("learning_rate", task.momentum_name))


class Runner:
    """Jitted init / train-for-a-chunk / score of ``method`` on ``task`` with ``data``."""

    def __init__(self, task: Task, method: Method, data: tuple[np.ndarray, np.ndarray]):
        x, y = (jnp.asarray(a) for a in data)
        n, bs = len(x), task.batch_size
        per_pass = n // bs
        tx = method.tx

        def init(seed):
            key = jax.random.fold_in(jax.random.key(0), seed)
            params = task.init_fn(jax.random.fold_in(key, 0))
            return Lane(params, tx.init(params), key, jnp.asarray(False))

        def set_hparams(opt_state, values):
            if not method.scheduled:
                return opt_state
            hp = dict(opt_state.hyperparams)
            for name, v in values.items():
                hp[name] = jnp.asarray(v, jnp.asarray(hp[name]).dtype)
            return opt_state._replace(hyperparams=hp)

        def train(lane, schedule, step0):
            def body(lane, inputs):
                i, values = inputs
                step = step0 + i
                order_key = jax.random.fold_in(jax.random.fold_in(lane.key, 1), step // per_pass)
                perm = jax.random.permutation(order_key, n)
                idx = jax.lax.dynamic_slice(perm, ((step % per_pass) * bs,), (bs,))
                drop_key = jax.random.fold_in(jax.random.fold_in(lane.key, 2), step)
                loss, grads = jax.value_and_grad(task.loss_fn)(
                    lane.params, (x[idx], y[idx]), drop_key
                )
                opt_state = set_hparams(lane.opt_state, values)
                updates, opt_state = tx.update(grads, opt_state, lane.params)
                params = optax.apply_updates(lane.params, updates)
                return Lane(params, opt_state, lane.key, lane.bad | ~jnp.isfinite(loss)), None

            length = jax.tree.leaves(schedule)[0].shape[0] if schedule else self.chunk
            lane, _ = jax.lax.scan(body, lane, (jnp.arange(length), schedule))
            return lane

        def score(lane, batch):
            params = lane.params
            if method.eval_params is not None:
                params = method.eval_params(lane.opt_state, params)
            s = task.score_fn(params, batch)
            return jnp.where(lane.bad | ~jnp.isfinite(s), jnp.nan, s)

        def train_lanes(lanes, schedules, step0):
            if task.lanes == "vmap":
                return jax.vmap(train, in_axes=(0, 0, None))(lanes, schedules, step0)
            # One lane after another: a vmapped convolution is a grouped one, slow on CPU.
            return jax.lax.map(lambda args: train(*args, step0), (lanes, schedules))

        self.chunk = task.steps_per_epoch
        self.scheduled = method.scheduled
        self._init = jax.jit(jax.vmap(init))
        self._train = jax.jit(train_lanes)
        self._score = jax.jit(jax.vmap(score, in_axes=(0, None)))

    def run(
        self,
        seeds: np.ndarray,
        schedules: Mapping[str, np.ndarray],
        num_steps: int,
        evals: Mapping[str, tuple[np.ndarray, np.ndarray]],
        report: Callable[[int, np.ndarray], None] | None = None,
        report_on: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Trains ``len(seeds)`` lanes for ``num_steps`` (a multiple of an epoch).

        Args:
          seeds: ``(lanes,)`` integer seeds.
          schedules: ``name -> (lanes, num_steps)`` values of the scheduled hyperparameters.
          num_steps: steps of each lane.
          evals: ``name -> (x, y)`` sets scored after the last step.
          report: called after every epoch with ``(epoch, scores on report_on)``;
            it may raise to stop the run (Optuna's pruning).
          report_on: the set ``report`` sees.

        Returns:
          ``name -> (lanes,)`` scores (NaN: the run diverged).
        """
        if set(schedules) != set(self.scheduled):
            raise ValueError(f"schedules must give {self.scheduled}, got {sorted(schedules)}")
        lanes = self._init(jnp.asarray(seeds, jnp.int32))
        for epoch, start in enumerate(range(0, num_steps, self.chunk)):
            part = {
                k: jnp.asarray(v[:, start : start + self.chunk], jnp.float32)
                for k, v in schedules.items()
            }
            lanes = self._train(lanes, part, start)
            if report is not None:
                report(epoch, np.asarray(self._score(lanes, report_on)))
        return {name: np.asarray(self._score(lanes, batch)) for name, batch in evals.items()}
