"""Leslie Smith's workflow end to end: grid range test -> momentum -> find_schedule -> 1cycle.

Following *A disciplined approach to neural network hyper-parameters* (Smith, 2018):

1. **Range test over a grid.** One LR range test per (weight decay, momentum)
   pair, all 16 run as lanes of one compiled program by :func:`clrjax.range_test`,
   read as a table. Smith picks the momentum this way: the lane whose smoothed
   loss gets lowest (``result.best()``) gives it.
2. **Race 1cycle schedules.** :func:`clrjax.find_schedule`, with that momentum
   fixed in the optimizer, proposes one-cycle peaks from its own range test and
   races them, for every weight decay of the grid, on accuracy on a validation
   split carved from the training split. (find_schedule refuses a grid over the
   momentum: one-cycle cycles it 0.95 -> 0.85 -> 0.95, so the momentum picked in
   stage 1 is the one its range test runs at; ``kinds=("one_cycle", "decay")``
   would race the per-epoch decay as well, which holds it.)
3. **Train with 1cycle.** ``choice.optimizer()``: the winning learning-rate and
   momentum schedules and weight decay applied to the optimizer by
   :func:`clrjax.scheduled`, in an ordinary jitted training loop, for the
   budget the race was run for; test accuracy on the untouched test split.

The model is a small MLP on scikit-learn's digits (or mnist1d), both offline.

Usage::

    python examples/smith_workflow.py                    # digits, ~80 s on 2 CPU cores
    python examples/smith_workflow.py --dataset mnist1d
    python examples/smith_workflow.py --quick            # tiny settings (used by the tests)
"""

from __future__ import annotations

import argparse
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import clrjax
from clrjax import demo

WEIGHT_DECAYS = (1e-3, 1e-4, 1e-5, 0.0)
MOMENTA = (0.85, 0.9, 0.95, 0.99)
VAL_FRACTION = 0.2  # of the training split, held out to score the race


def sgd(learning_rate, momentum, weight_decay):
    """SGD with Nesterov momentum and L2 weight decay, the optimizer of every stage.

    All three arguments may be arrays: the range tests trace ``momentum`` and
    ``weight_decay`` per lane, and training passes schedules through
    :func:`clrjax.scheduled`.
    """
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=momentum, nesterov=True),
    )


def range_test_table(result: clrjax.RangeTestResult) -> None:
    """Prints each lane's lowest smoothed loss, where it is, and where the lane diverged."""
    lowest = np.nanmin(result.smoothed, axis=1)
    at_lowest = result.lrs[np.nanargmin(result.smoothed, axis=1)]
    minimum = result.suggest("minimum")
    print(f"  {'lane':<36} {'lowest loss':>11} {'at LR':>8} {'minimum':>8} {'diverged at LR':>14}")
    for i in range(result.num_lanes):
        diverged = result.diverged_at[i]
        where = f"{result.lrs[diverged]:.3g}" if diverged >= 0 else "-"
        print(
            f"  {result.lane_label(i):<36} {lowest[i]:>11.4f} {at_lowest[i]:>8.3g} "
            f"{minimum[i]:>8.3g} {where:>14}"
        )


def race_table(choice: clrjax.ScheduleChoice) -> None:
    """Prints the candidates that reached the second rung, with their score in each rung."""
    scores = choice.candidate_scores()
    budgets = " ".join(f"{f'{r.num_steps} steps':>10}" for r in choice.rungs)
    print(f"  {'candidate':<44} {budgets}")
    for i in np.flatnonzero(np.isfinite(scores[:, 1])):
        row = " ".join(f"{s:>10.2%}" if np.isfinite(s) else f"{'-':>10}" for s in scores[i])
        mark = "  <- winner" if i == choice.winner else ""
        print(f"  {choice.candidates[i].label():<44} {row}{mark}")


def train(choice: clrjax.ScheduleChoice, data, train_data, init_params, *, batch_size):
    """Trains ``init_params`` with ``choice.optimizer()``; prints LR, momentum, loss, test acc."""
    opt = choice.optimizer()
    x_train, y_train = (jnp.asarray(a) for a in train_data)
    steps_per_epoch = len(x_train) // batch_size
    epochs = choice.total_steps // steps_per_epoch

    @jax.jit
    def run_epoch(params, opt_state, key):
        order = jax.random.permutation(key, len(x_train))[: steps_per_epoch * batch_size]

        def step(carry, idx):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(demo.mlp_loss)(params, (x_train[idx], y_train[idx]))
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(
            step, (params, opt_state), order.reshape(steps_per_epoch, batch_size)
        )
        return params, opt_state, jnp.mean(losses)

    params, opt_state = init_params, opt.init(init_params)
    key = jax.random.key(1)
    print(f"{'epoch':>5} {'LR':>9} {'momentum':>8} {'train loss':>10} {'test acc':>8}")
    for epoch in range(1, epochs + 1):
        # The values this epoch starts with (the state holds the latest ones used).
        lr = float(opt_state.hyperparams["learning_rate"])
        mom = float(opt_state.hyperparams["momentum"])
        key, epoch_key = jax.random.split(key)
        params, opt_state, loss = run_epoch(params, opt_state, epoch_key)
        acc = float(demo.mlp_accuracy(params, (data.x_test, data.y_test)))
        print(f"{epoch:>5} {lr:>9.4f} {mom:>8.3f} {float(loss):>10.4f} {acc:>8.2%}")
    return acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=demo.DATASETS, default="digits")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    args = parser.parse_args(argv)
    steps, epochs, hidden = (30, 2, (16,)) if args.quick else (200, args.epochs, (128,))
    batch_size = 64

    data = demo.load_dataset(args.dataset)
    order = np.random.default_rng(0).permutation(len(data.x_train))
    n_val = round(VAL_FRACTION * len(order))
    train_data = (data.x_train[order[n_val:]], data.y_train[order[n_val:]])
    val_data = (data.x_train[order[:n_val]], data.y_train[order[:n_val]])
    sizes = (data.x_train.shape[1], *hidden, data.num_classes)
    params = demo.init_mlp(jax.random.key(0), sizes)

    # -- Stage 1: a range test per (weight decay, momentum), one compiled program.
    print(f"Stage 1: range test on {args.dataset}, MLP {sizes}, {steps} steps, grid")
    print(f"  weight_decay {WEIGHT_DECAYS} x momentum {MOMENTA}")
    result = clrjax.range_test(
        demo.mlp_loss,
        params,
        train_data,
        batch_size=batch_size,
        num_steps=steps,
        start_lr=1e-5,  # find_schedule's range
        end_lr=10.0,
        optimizer=sgd,
        grid={"weight_decay": WEIGHT_DECAYS, "momentum": MOMENTA},
        execution=clrjax.Execution(progress=False),
    )
    print(f"  {result.strategy}, {result.num_lanes} lanes")
    range_test_table(result)
    # Smith keeps the momentum whose test reaches the lowest loss: it lets the
    # network learn fastest. (The curves' LR readings are not the schedule: the race decides.)
    best = result.best()
    momentum = best.hparams["momentum"]
    print(f"  lowest loss: {result.lane_label(best.index)} -> momentum {momentum:g}")

    # -- Stage 2: race one-cycle peaks x weight decays at that momentum.
    steps_per_epoch = len(train_data[0]) // batch_size
    print(f"\nStage 2: find_schedule, momentum {momentum:g}, weight_decay {WEIGHT_DECAYS}")
    choice = clrjax.find_schedule(
        demo.mlp_loss,
        params,
        train_data,
        val_data=val_data,
        total_steps=epochs * steps_per_epoch,
        batch_size=batch_size,
        optimizer=functools.partial(sgd, momentum=momentum),
        grid={"weight_decay": WEIGHT_DECAYS},
        val_metric=demo.mlp_accuracy,  # fraction right: higher is better
        kinds=("one_cycle",),
        search=clrjax.Search(range_test_steps=steps if args.quick else 100),
    )
    print(f"  {len(choice.candidates)} candidates raced; validation accuracy per rung:")
    race_table(choice)
    print(f"  decided by {choice.decided_by}")
    print(f"  {choice}")

    # -- Stage 3: the full run with the winner (the race's budget, on the same data).
    print(f"\nStage 3: 1cycle training, {epochs} epochs, batch size {batch_size}")
    acc = train(choice, data, train_data, params, batch_size=batch_size)
    print(f"\nfinal test accuracy {acc:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
