"""Cyclical learning rate and cyclical momentum inside an ``optax.chain``.

Shows how clrjax schedules compose with Optax in an ordinary jitted train step:

* ``clrjax.cyclic_schedule`` drives the learning rate (Smith's triangular CLR),
* ``clrjax.cyclic_momentum_schedule`` drives SGD's Nesterov momentum in the
  opposite phase (high LR <-> low momentum),
* ``clrjax.scheduled(optax.sgd, ...)`` turns both into one
  ``GradientTransformation`` that sits after gradient clipping in
  ``optax.chain``,
* the values each update used are read back from the optimizer state
  (``state[1].hyperparams``) for logging.

The model is a tiny two-layer MLP fitting ``sin(3x)`` on 256 points; the
script runs in a few seconds on a CPU::

    python examples/optax_chain_cyclic.py
"""

import jax
import jax.numpy as jnp
import optax

import clrjax

NUM_STEPS = 400
STEP_SIZE = 50  # steps per half cycle: LR goes up for 50 steps, down for 50
LOG_EVERY = 25


def init_params(key: jax.Array, hidden: int = 32) -> dict:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (1, hidden)),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, 1)) / jnp.sqrt(hidden),
        "b2": jnp.zeros(1),
    }


def predict(params: dict, x: jax.Array) -> jax.Array:
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def main() -> None:
    x = jnp.linspace(-1.0, 1.0, 256)[:, None]
    y = jnp.sin(3.0 * x)

    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0),
        clrjax.scheduled(
            optax.sgd,
            learning_rate=clrjax.cyclic_schedule(0.01, 0.3, step_size_up=STEP_SIZE),
            momentum=clrjax.cyclic_momentum_schedule(0.8, 0.95, step_size_up=STEP_SIZE),
            nesterov=True,
        ),
    )

    @jax.jit
    def train_step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((predict(p, x) - y) ** 2))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = init_params(jax.random.key(0))
    opt_state = optimizer.init(params)
    print(f"{'step':>5} {'lr':>8} {'momentum':>9} {'loss':>10}")
    for step in range(NUM_STEPS):
        params, opt_state, loss = train_step(params, opt_state)
        if step % LOG_EVERY == 0 or step == NUM_STEPS - 1:
            used = opt_state[1].hyperparams  # values this update used
            print(
                f"{step:5d} {float(used['learning_rate']):8.4f} "
                f"{float(used['momentum']):9.4f} {float(loss):10.6f}"
            )


if __name__ == "__main__":
    main()
