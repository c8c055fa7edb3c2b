"""Leslie Smith's workflow end to end: grid range test -> pick LR and weight decay -> 1cycle.

Following *A disciplined approach to neural network hyper-parameters* (Smith, 2018):

1. **Range test over a grid.** One LR range test per (weight decay, momentum)
   pair, all 16 run as lanes of one compiled program by :func:`clrjax.range_test`.
2. **Pick.** The lane whose smoothed loss gets lowest wins (``result.best``): its
   weight decay and momentum are kept, and the maximum learning rate is read off
   its curve (rule explained at the pick below).
3. **Train with 1cycle.** :func:`clrjax.one_cycle_schedule` for the learning rate
   and :func:`clrjax.one_cycle_momentum_schedule` for the momentum (cycled down
   while the LR goes up), combined by :func:`clrjax.scheduled` into one optax
   optimizer, in an ordinary jitted training loop.

The model is a small MLP on scikit-learn's digits (or mnist1d), both offline.

Usage::

    python examples/smith_workflow.py                    # digits, ~20 s on 2 CPU cores
    python examples/smith_workflow.py --dataset mnist1d
    python examples/smith_workflow.py --quick            # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import clrjax
from clrjax import demo

WEIGHT_DECAYS = (1e-3, 1e-4, 1e-5, 0.0)
MOMENTA = (0.85, 0.9, 0.95, 0.99)


def sgd(learning_rate, momentum, weight_decay):
    """SGD with Nesterov momentum and L2 weight decay, the optimizer of every stage.

    All three arguments may be arrays: the range test traces ``momentum`` and
    ``weight_decay`` per lane, and training passes schedules through
    :func:`clrjax.scheduled`.
    """
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=momentum, nesterov=True),
    )


def train_one_cycle(data, init_params, *, max_lr, momentum, weight_decay, epochs, batch_size):
    """1cycle training; prints LR, momentum, train loss and test accuracy per epoch."""
    steps_per_epoch = len(data.x_train) // batch_size
    total_steps = epochs * steps_per_epoch
    # Momentum cycles inversely to the LR, between the picked value and 0.1 below it.
    lr_schedule = clrjax.one_cycle_schedule(total_steps, max_lr)
    momentum_schedule = clrjax.one_cycle_momentum_schedule(
        total_steps, base_momentum=momentum - 0.1, max_momentum=momentum
    )
    opt = clrjax.scheduled(
        sgd, learning_rate=lr_schedule, momentum=momentum_schedule, weight_decay=weight_decay
    )
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

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
    return params, acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=demo.DATASETS, default="digits")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    args = parser.parse_args(argv)
    steps, epochs, hidden = (30, 2, (16,)) if args.quick else (200, args.epochs, (128,))
    batch_size = 64

    data = demo.load_dataset(args.dataset)
    sizes = (data.x_train.shape[1], *hidden, data.num_classes)
    params = demo.init_mlp(jax.random.key(0), sizes)

    # -- Stage 1: a range test per (weight decay, momentum), one compiled program.
    print(f"Stage 1: range test on {args.dataset}, MLP {sizes}, {steps} steps, grid")
    print(f"  weight_decay {WEIGHT_DECAYS} x momentum {MOMENTA}")
    result = clrjax.range_test(
        demo.mlp_loss,
        params,
        (data.x_train, data.y_train),
        batch_size=batch_size,
        num_steps=steps,
        start_lr=1e-5,
        end_lr=10.0,
        optimizer=sgd,
        grid={"weight_decay": WEIGHT_DECAYS, "momentum": MOMENTA},
        progress=False,
    )
    lowest = np.nanmin(result.smoothed, axis=1)
    at_lowest = result.lrs[np.nanargmin(result.smoothed, axis=1)]
    minimum = result.suggest("minimum")
    print(f"  {result.strategy}, {result.num_lanes} lanes")
    print(f"  {'lane':<36} {'lowest loss':>11} {'at LR':>8} {'min/10':>8} {'diverged at LR':>14}")
    for i in range(result.num_lanes):
        diverged = result.diverged_at[i]
        where = f"{result.lrs[diverged]:.3g}" if diverged >= 0 else "-"
        print(
            f"  {result.lane_label(i):<36} {lowest[i]:>11.4f} {at_lowest[i]:>8.3g} "
            f"{minimum[i]:>8.3g} {where:>14}"
        )

    # -- Stage 2: pick. Smith keeps the weight decay and momentum whose test reaches
    # the lowest loss (regularisation that still lets the network learn fastest),
    # and for 1cycle takes the largest LR at which training still converges. The
    # loss minimum sits right at the edge of divergence, so we read the maximum LR
    # as one order of magnitude below it: result.best("minimum") returns the lane
    # with the lowest smoothed loss and that lane's LR-at-minimum / 10 (fastai's
    # "minimum" suggestion). The "valley" reading is printed for comparison; it is
    # usually more conservative (a constant-LR pick rather than a 1cycle peak).
    best = result.best("minimum")
    valley = result.suggest("valley")[best.index]
    weight_decay, momentum = best.hparams["weight_decay"], best.hparams["momentum"]
    print(f"\nStage 2: best lane {best.index}: {result.lane_label(best.index)}")
    print(f"  max LR {best.lr:.3g} (LR at its lowest loss / 10; valley would say {valley:.3g})")
    # How much did the weight decay matter? Compare the lanes sharing the momentum.
    same_momentum = result.hparams["momentum"] == momentum
    spread = np.ptp(lowest[same_momentum])
    print(f"  lowest losses across weight decays at momentum {momentum:g} differ by {spread:.4f}")

    # -- Stage 3: 1cycle with cyclical momentum and the picked weight decay.
    print(f"\nStage 3: 1cycle training, {epochs} epochs, batch size {batch_size}")
    _, acc = train_one_cycle(
        data,
        params,
        max_lr=best.lr,
        momentum=momentum,
        weight_decay=weight_decay,
        epochs=epochs,
        batch_size=batch_size,
    )
    print(f"\nfinal test accuracy {acc:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
