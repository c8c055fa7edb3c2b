"""Flax NNX: a stateful train step is pointed to split/merge; seeds reach nnx.Rngs by reseeding."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax

nnx = pytest.importorskip("flax.nnx")

N, D = 64, 3
X = np.asarray(jax.random.normal(jax.random.key(0), (N, D)))
Y = X @ np.array([1.0, -2.0, 0.5])
FAST = dict(batch_size=16, num_steps=10, start_lr=1e-3, end_lr=0.3, shuffle=False)
TX = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)


class Net(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(D, 1, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.linear(self.dropout(x))[:, 0]


def mse(model, batch):
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


def split():
    model = Net(nnx.Rngs(params=0, dropout=1))
    return nnx.split((model, nnx.Optimizer(model, TX, wrt=nnx.Param)))


def test_a_stateful_step_is_pointed_to_the_functional_form():
    @nnx.jit
    def stateful(model, optimizer, batch):  # updates in place, returns only the loss
        loss, grads = nnx.value_and_grad(mse)(model, batch)
        optimizer.update(model, grads)
        return loss

    graphdef, state = split()
    step = lambda state, batch: stateful(*nnx.merge(graphdef, state), batch)
    match = (
        r"must return \(new_state, metrics\), got a single array of shape \(\) and dtype "
        r"float32; .*nnx\.split\(\(model, optimizer\)\).*return nnx\.state\(\(model, optimizer\)\)"
    )
    with pytest.raises(ValueError, match=match):
        clrjax.range_test_step(step, state, (X, Y), **FAST)


def _functional(graphdef, reseed):
    def train_step(state, batch, key=None):
        model, optimizer = nnx.merge(graphdef, state)
        if reseed:
            nnx.reseed(model, dropout=key)
        loss, grads = nnx.value_and_grad(mse)(model, batch)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    return train_step


def test_seeds_reach_the_modules_rngs_by_reseeding():
    graphdef, state = split()
    kw = dict(FAST, seeds=[0, 1])
    with pytest.warns(UserWarning, match=r"nnx\.Rngs.*nnx\.reseed\(model, dropout=key\)"):
        same = clrjax.range_test_step(_functional(graphdef, False), state, (X, Y), **kw)
    np.testing.assert_array_equal(same.losses[0], same.losses[1])  # one nnx.Rngs for all
    step = _functional(graphdef, True)
    seeded = clrjax.range_test_step(step, state, (X, Y), model=clrjax.Model(takes_rng=True), **kw)
    assert np.isfinite(seeded.losses[:, 0]).all()
    assert seeded.losses[0, 0] != seeded.losses[1, 0]


def test_seeds_reach_a_merged_module_in_a_loss_function():
    model = Net(nnx.Rngs(params=0, dropout=1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, batch, key):
        model = nnx.merge(graphdef, params, rest, copy=True)
        nnx.reseed(model, dropout=key)
        return mse(model, batch)

    result = clrjax.range_test(
        loss_fn, params, (X, Y), seeds=[0, 1], model=clrjax.Model(takes_rng=True), **FAST
    )
    assert np.isfinite(result.losses[:, 0]).all()
    assert result.losses[0, 0] != result.losses[1, 0]
