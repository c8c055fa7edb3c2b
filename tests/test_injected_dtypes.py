"""bfloat16 params with optax.inject_hyperparams: float32 hyperparameters work, bfloat16 refused."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax

N, D, BATCH, STEPS = 256, 3, 32, 16
X = np.asarray(jax.random.normal(jax.random.key(0), (N, D)), np.float32)
Y = X @ np.array([1.0, -2.0, 0.5], np.float32)
FAST = dict(batch_size=BATCH, num_steps=STEPS, start_lr=1e-4, end_lr=1.0, shuffle=False)
W = jnp.zeros(D, jnp.bfloat16)


def mse(w, batch):
    x, y = batch
    return jnp.mean((x @ w.astype(jnp.float32) - y) ** 2)


def adam(**options):
    return optax.inject_hyperparams(optax.adam, **options)(learning_rate=1e-3)


def make_step(tx):
    def train_step(state, batch):
        loss, grads = jax.value_and_grad(mse)(state["w"], batch)
        updates, opt = tx.update(grads, state["opt"], state["w"])
        return {"w": optax.apply_updates(state["w"], updates), "opt": opt}, loss

    return train_step


def plain_loop(tx, lrs):
    """A plain training loop's losses: sequential batches, the ramp's LR set before each step."""
    step = jax.jit(make_step(tx))
    state, losses = {"w": W, "opt": tx.init(W)}, []
    for i, lr in enumerate(lrs):
        state["opt"].hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        first = i * BATCH % N
        state, loss = step(state, (X[first : first + BATCH], Y[first : first + BATCH]))
        losses.append(float(loss))
    # the loop's first step turned Adam's bfloat16 moments into float32
    assert state["opt"].inner_state[0].mu.dtype == jnp.float32
    return np.array(losses)


def test_float32_hyperparams_with_bfloat16_params_train_as_a_plain_loop():
    tx = adam(hyperparam_dtype=jnp.float32)
    assert tx.init(W).inner_state[0].mu.dtype == jnp.bfloat16  # widened by the first step
    result = clrjax.range_test(mse, W, (X, Y), optimizer=tx, **FAST)
    stepped = clrjax.range_test_step(make_step(tx), {"w": W, "opt": tx.init(W)}, (X, Y), **FAST)
    expected = plain_loop(tx, result.lrs)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(result.losses[0], expected, rtol=1e-5)
    np.testing.assert_allclose(stepped.losses[0], expected, rtol=1e-5)


@pytest.mark.parametrize("factory", [optax.adam, optax.sgd])
def test_bfloat16_hyperparams_are_refused_naming_the_fix(factory):
    # sgd would not turn NaN: the dtype itself is refused, before anything runs
    tx = optax.inject_hyperparams(factory)(learning_rate=1e-3)
    fix = r"in bfloat16 .*hyperparam_dtype=jnp\.float32"
    with pytest.raises(ValueError, match=r"optimizer: optax\.inject_hyperparams stores.*" + fix):
        clrjax.range_test(mse, W, (X, Y), optimizer=tx, **FAST)
    with pytest.raises(ValueError, match=r"train_state: .*" + fix):
        clrjax.range_test_step(make_step(tx), {"w": W, "opt": tx.init(W)}, (X, Y), **FAST)


def test_adam_in_bfloat16_is_told_why_it_is_nan():
    with pytest.raises(ValueError, match=r"0\.999 becomes 1 \(Adam's b2=1 makes every update NaN"):
        clrjax.range_test(mse, W, (X, Y), optimizer=adam(), **FAST)


def test_a_step_that_narrows_a_leaf_is_still_refused():
    tx = adam(hyperparam_dtype=jnp.float32)
    train_step = make_step(tx)

    def narrowing(state, batch):
        new, loss = train_step({"w": state["w"], "opt": state["opt"]}, batch)
        return {**new, "scale": state["scale"].astype(jnp.bfloat16)}, loss

    start = {"w": W, "opt": tx.init(W), "scale": jnp.ones((), jnp.float32)}
    with pytest.raises(TypeError, match=r"changed state\['scale'\] from float32\[\] to bfloat16"):
        clrjax.range_test_step(narrowing, start, (X, Y), **FAST)
