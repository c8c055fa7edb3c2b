"""Tests for clrjax.range_test_step (the range test on the user's own train step)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax

N, D = 64, 3
X = np.asarray(jax.random.normal(jax.random.key(0), (N, D)))
Y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * np.asarray(jax.random.normal(jax.random.key(1), (N,)))
FAST = dict(batch_size=16, num_steps=30, start_lr=1e-3, end_lr=3.0, shuffle=False)
# The same computation compiled in two programs: float32 rounding may differ by an ulp,
# and Adam amplifies it near the end of the ramp.
SAME = dict(rtol=3e-4, equal_nan=True)


def mse(w, batch):
    x, y = batch
    return jnp.mean((x @ w - y) ** 2)


def make_step(tx, traces=None):
    def train_step(state, batch):
        if traces is not None:
            traces.append(1)
        loss, grads = jax.value_and_grad(mse)(state["w"], batch)
        updates, opt_state = tx.update(grads, state["opt"], state["w"])
        return {"w": optax.apply_updates(state["w"], updates), "opt": opt_state}, {"loss": loss}

    return train_step


def start(tx):
    w = jnp.zeros(D, jnp.float32)
    return {"w": w, "opt": tx.init(w)}


def val_step(state, batch):
    return {"loss": mse(state["w"], batch), "other": jnp.float32(0.0)}


@pytest.mark.parametrize(
    ("factory", "grid"),
    [
        (optax.sgd, {"momentum": [0.0, 0.5, 0.9]}),
        (optax.adamw, {"weight_decay": [0.0, 1e-2], "b1": [0.9, 0.5]}),
    ],
)
def test_curves_equal_range_test(factory, grid):
    tx = optax.inject_hyperparams(factory)(learning_rate=0.1, **{k: v[0] for k, v in grid.items()})
    step = clrjax.range_test_step(make_step(tx), start(tx), (X, Y), grid=grid, **FAST)
    loss = clrjax.range_test(mse, jnp.zeros(D), (X, Y), optimizer=factory, grid=grid, **FAST)
    np.testing.assert_allclose(step.losses, loss.losses, **SAME)
    np.testing.assert_allclose(step.smoothed, loss.smoothed, **SAME)
    np.testing.assert_array_equal(step.diverged_at, loss.diverged_at)
    assert step.grid_names == tuple(grid)
    # range_test also takes the inject_hyperparams optimizer itself
    injected = clrjax.range_test(mse, jnp.zeros(D), (X, Y), optimizer=tx, grid=grid, **FAST)
    np.testing.assert_allclose(injected.losses, loss.losses, **SAME)


def test_chain_with_clipping_and_validation():
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=1e-4),
    )
    kw = dict(grid={"weight_decay": [0.0, 0.1]}, **FAST)
    val = clrjax.Validation((X, Y), every=5)
    step = clrjax.range_test_step(
        make_step(tx),
        start(tx),
        (X, Y),
        validation=dataclasses.replace(val, step=val_step),
        **kw,
    )
    loss = clrjax.range_test(mse, jnp.zeros(D), (X, Y), optimizer=tx, validation=val, **kw)
    np.testing.assert_allclose(step.losses, loss.losses, **SAME)
    np.testing.assert_allclose(step.val_losses, loss.val_losses, **SAME)
    np.testing.assert_array_equal(step.val_steps, [4, 9, 14, 19, 24, 29])


def test_state_untouched_and_no_recompile():
    traces = []
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    state = start(tx)
    before = jax.tree.map(np.array, state)
    step = make_step(tx, traces)
    first = clrjax.range_test_step(step, state, (X, Y), grid={"momentum": [0.5, 0.9]}, **FAST)
    count = len(traces)
    again = {**FAST, "start_lr": 1e-4, "end_lr": 1.0}
    second = clrjax.range_test_step(step, state, (X, Y), grid={"momentum": [0.0, 0.8]}, **again)
    assert len(traces) == count
    assert not np.allclose(first.losses, second.losses, equal_nan=True)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state), before)
    for leaf in jax.tree.leaves(state):
        assert not leaf.is_deleted()


def test_scalar_metrics_loss_key_and_rng():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    inner = make_step(tx)

    def scalar_step(state, batch):
        new, metrics = inner(state, batch)
        return new, metrics["loss"]

    def renamed_step(state, batch):
        new, metrics = inner(state, batch)
        return new, {"objective": metrics["loss"], "accuracy": jnp.float32(1.0)}

    reference = clrjax.range_test_step(inner, start(tx), (X, Y), **FAST)
    scalar = clrjax.range_test_step(scalar_step, start(tx), (X, Y), **FAST)
    renamed = clrjax.range_test_step(renamed_step, start(tx), (X, Y), loss_key="objective", **FAST)
    np.testing.assert_array_equal(scalar.losses, reference.losses)
    np.testing.assert_array_equal(renamed.losses, reference.losses)

    def noisy_step(state, batch, key):
        new, metrics = inner(state, batch)
        return new, metrics["loss"] * 0.0 + jax.random.uniform(key)

    kw = dict(FAST, curve=clrjax.Curve(diverge_threshold=None), num_steps=5)
    noisy = clrjax.range_test_step(
        noisy_step, start(tx), (X, Y), seeds=[0, 1], **kw, model=clrjax.Model(takes_rng=True)
    )
    assert len(set(noisy.losses[0].tolist())) == 5
    assert not np.allclose(noisy.losses[0], noisy.losses[1])


def test_flax_linen_train_state():
    pytest.importorskip("flax")
    from flax import linen as nn
    from flax.training import train_state

    model = nn.Dense(1)
    params = model.init(jax.random.key(0), X[:1])
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=0.0)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    def loss_fn(p, batch):
        return jnp.mean((model.apply(p, batch[0])[:, 0] - batch[1]) ** 2)

    @jax.jit
    def train_step(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        return state.apply_gradients(grads=grads), {"loss": loss}

    grid = {"weight_decay": [0.0, 1e-1]}
    r = clrjax.range_test_step(train_step, state, (X, Y), grid=grid, **FAST)
    ref = clrjax.range_test(loss_fn, params, (X, Y), optimizer=optax.adamw, grid=grid, **FAST)
    np.testing.assert_allclose(r.losses, ref.losses, **SAME)
    assert int(state.step) == 0
    with pytest.raises(TypeError, match="range_test_step"):
        clrjax.range_test(loss_fn, state, (X, Y), **FAST)


def test_flax_nnx_split_state():
    pytest.importorskip("flax")
    from flax import nnx

    model = nnx.Linear(D, 1, rngs=nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    def train_step(state, batch):
        model, optimizer = nnx.merge(graphdef, state)

        def loss_fn(model):
            return jnp.mean((model(batch[0])[:, 0] - batch[1]) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    r = clrjax.range_test_step(train_step, state, (X, Y), grid={"momentum": [0.0, 0.9]}, **FAST)
    params = nnx.state(model, nnx.Param)

    def loss_fn(p, batch):
        return jnp.mean((batch[0] @ p["kernel"][...] + p["bias"][...] - batch[1][:, None]) ** 2)

    ref = clrjax.range_test(
        loss_fn, params, (X, Y), optimizer=optax.sgd, grid={"momentum": [0.0, 0.9]}, **FAST
    )
    np.testing.assert_allclose(r.losses, ref.losses, **SAME)


def test_bad_input():
    plain = optax.adam(1e-3)
    with pytest.raises(ValueError, match="inject_hyperparams"):
        clrjax.range_test_step(make_step(plain), start(plain), (X, Y), **FAST)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    with pytest.raises(ValueError, match="has no injected hyperparameter 'momentum' to set"):
        clrjax.range_test_step(make_step(tx), start(tx), (X, Y), grid={"momentum": [0.9]}, **FAST)
    scheduled = clrjax.scheduled(optax.sgd, learning_rate=clrjax.one_cycle_schedule(100, 0.1))
    with pytest.raises(ValueError, match="schedule"):
        clrjax.range_test_step(make_step(scheduled), start(scheduled), (X, Y), **FAST)
    with pytest.raises(ValueError, match=r"needs Validation\.step"):
        clrjax.range_test_step(
            make_step(tx), start(tx), (X, Y), **FAST, validation=clrjax.Validation((X, Y))
        )
    with pytest.raises(ValueError, match="loss_key"):
        clrjax.range_test_step(make_step(tx), start(tx), (X, Y), loss_key="objective", **FAST)
    with pytest.raises(ValueError, match=r"\(new_state, metrics\)"):
        clrjax.range_test_step(lambda s, b: s, start(tx), (X, Y), **FAST)
    with pytest.raises(TypeError, match="changed state"):
        bad = lambda s, b: ({**s, "w": s["w"].astype(jnp.float16)}, mse(s["w"], b))
        clrjax.range_test_step(bad, start(tx), (X, Y), **FAST)
    with pytest.raises(ValueError, match="train_state"):
        clrjax.range_test_step(make_step(tx), None, (X, Y), **FAST)
    with pytest.raises(ValueError, match="learning_rate' cannot be a grid axis"):
        clrjax.range_test_step(make_step(tx), start(tx), (X, Y), grid={"learning_rate": [1]})


def test_a_train_step_passed_to_range_test_is_pointed_to_range_test_step():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    with pytest.raises(TypeError, match=r"optimizer state at params\['opt'\].*range_test_step"):
        clrjax.range_test(make_step(tx), start(tx), (X, Y), **FAST)

    def looks_like_a_step(w, batch):  # returns (new params, metrics)
        return w - 0.1, {"loss": mse(w, batch)}

    with pytest.raises(ValueError, match="range_test_step"):
        clrjax.range_test(looks_like_a_step, jnp.zeros(D), (X, Y), **FAST)


def test_a_step_that_changes_its_state_structure_is_refused():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    step = make_step(tx)

    def renamed(state, batch):  # the same leaves under another key
        new, metrics = step(state, batch)
        return {"v": new["w"], "opt": new["opt"]}, metrics

    with pytest.raises(TypeError, match="must return its state with the same structure"):
        clrjax.range_test_step(renamed, start(tx), (X, Y), **FAST)


def test_a_step_that_reports_no_scalar_loss_is_refused():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    step = make_step(tx)

    def vector_loss(state, batch):
        new, metrics = step(state, batch)
        return new, {"loss": jnp.full(2, metrics["loss"])}

    with pytest.raises(ValueError, match="train_step must report a floating scalar loss"):
        clrjax.range_test_step(vector_loss, start(tx), (X, Y), **FAST)


def test_an_integer_injected_hyperparameter_is_refused():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=1)
    with pytest.raises(ValueError, match="'momentum' is stored as int32"):
        clrjax.range_test_step(
            make_step(tx), start(tx), (X, Y), grid={"momentum": [0.5, 0.9]}, **FAST
        )


def test_a_bad_train_step_state_or_loss_key_is_named():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    with pytest.raises(TypeError, match="train_step must be callable, got 'step'"):
        clrjax.range_test_step("step", start(tx), (X, Y), **FAST)
    with pytest.raises(ValueError, match=r"train_state must be given unless Model\.init_fn is"):
        clrjax.range_test_step(make_step(tx), None, (X, Y), **FAST)
    with pytest.raises(TypeError, match="loss_key must be a string, got 1"):
        clrjax.range_test_step(make_step(tx), start(tx), (X, Y), loss_key=1, **FAST)
    with pytest.raises(TypeError, match=r"Validation\.step must be callable or None, got 'val'"):
        clrjax.Validation((X, Y), step="val")


def _held_step(tx, returned):
    """A step on a state with a held (non-array) leaf that returns ``returned(new_state)``."""
    inner = make_step(tx)

    def train_step(state, batch):
        new, metrics = inner({"w": state["w"], "opt": state["opt"]}, batch)
        return returned({**new, "act": state["act"]}), metrics

    return train_step


@pytest.mark.parametrize(
    ("returned", "match"),
    [
        (lambda s: {**s, "extra": s["w"]}, "the train step must return its state with the same"),
        (lambda s: {**s, "w": str}, r"the train step turned the array state\['w'\] into"),
    ],
    ids=["structure", "array_to_object"],
)
def test_a_step_that_reshapes_a_state_with_held_leaves_is_refused(returned, match):
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    state = {**start(tx), "act": jnp.tanh}  # a function leaf: held fixed outside the program
    with pytest.raises(TypeError, match=match):
        clrjax.range_test_step(_held_step(tx, returned), state, (X, Y), **FAST)
