"""Equinox modules as params and inside train states: their non-array leaves are held fixed."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax

eqx = pytest.importorskip("equinox")

N, D = 128, 3
X = np.asarray(jax.random.normal(jax.random.key(0), (N, D)))
Y = np.asarray(X @ np.array([[1.0], [-2.0], [0.5]]) + 0.1)
FAST = dict(batch_size=16, num_steps=20, start_lr=1e-3, end_lr=1.0, shuffle=False)
SAME = dict(rtol=1e-5, equal_nan=True)


def make_mlp():
    return eqx.nn.MLP(D, 1, 8, 2, key=jax.random.key(1))


def loss_fn(model, batch):
    x, y = batch
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def as_plain(model):
    """The model's arrays as a plain list, and the loss of such a list."""
    arrays, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(arrays)

    def plain_loss(leaves, batch):
        return loss_fn(eqx.combine(jax.tree.unflatten(treedef, leaves), static), batch)

    return leaves, plain_loss


def test_the_module_has_leaves_that_are_not_arrays():
    kinds = {type(leaf) for leaf in jax.tree.leaves(make_mlp())}
    assert any(not isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(make_mlp())), kinds


@pytest.mark.parametrize("strategy", ["vmap", "serial"])
def test_range_test_curve_equals_the_plain_arrays(strategy):
    model = make_mlp()
    before = jax.tree.leaves(model)
    copies = [np.array(leaf) for leaf in before if eqx.is_array(leaf)]
    grid = {"weight_decay": [0.0, 1e-2]}
    kw = dict(FAST, optimizer=optax.adamw, grid=grid, execution=clrjax.Execution(strategy=strategy))
    result = clrjax.range_test(loss_fn, model, (X, Y), **kw)
    leaves, plain_loss = as_plain(model)
    plain = clrjax.range_test(plain_loss, leaves, (X, Y), **kw)
    assert result.losses.shape == (2, FAST["num_steps"])
    assert np.isfinite(result.losses[:, :5]).all()
    np.testing.assert_allclose(result.losses, plain.losses, **SAME)
    np.testing.assert_array_equal(result.diverged_at, plain.diverged_at)
    # the user's module is untouched: the same leaves, the same values
    after = jax.tree.leaves(model)
    assert all(a is b for a, b in zip(after, before, strict=True))
    for copy, leaf in zip(copies, [leaf for leaf in after if eqx.is_array(leaf)], strict=True):
        np.testing.assert_array_equal(np.asarray(leaf), copy)


def test_the_optimizer_sees_only_the_arrays():
    seen = []

    def factory(learning_rate):
        tx = optax.sgd(learning_rate)

        def init(params):
            seen.extend(jax.tree.leaves(params))
            return tx.init(params)

        return optax.GradientTransformation(init, tx.update)

    clrjax.range_test(loss_fn, make_mlp(), (X, Y), optimizer=factory, **FAST)
    assert seen and all(isinstance(leaf, jax.Array) for leaf in seen)


def test_python_numbers_and_flags_of_a_module_are_held():
    class Net(eqx.Module):
        mlp: eqx.nn.MLP
        dropout: eqx.nn.Dropout  # p=0.5 and inference=False: a float and a bool leaf

        def __call__(self, x, key):
            return self.mlp(self.dropout(x, key=key))

    net = Net(make_mlp(), eqx.nn.Dropout(0.5))

    def dropout_loss(model, batch, key):
        x, y = batch
        keys = jax.random.split(key, len(x))
        return jnp.mean((jax.vmap(model)(x, keys) - y) ** 2)

    result = clrjax.range_test(
        dropout_loss, net, (X, Y), model=clrjax.Model(takes_rng=True), seeds=[0, 1], **FAST
    )
    assert np.isfinite(result.losses[:, :5]).all()
    assert not np.array_equal(result.losses[0], result.losses[1])  # the keys reach dropout


def _state(model, tx):
    return model, tx.init(eqx.filter(model, eqx.is_inexact_array))


def _make_step(tx, replace=None):
    def train_step(state, batch):
        model, opt_state = state
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, batch)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = tx.update(grads, opt_state, params)
        model = eqx.apply_updates(model, updates)
        if replace is not None:
            model = replace(model, loss)
        return (model, opt_state), {"loss": loss}

    return train_step


def test_range_test_step_equals_range_test():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    model = make_mlp()
    grid = {"momentum": [0.0, 0.9]}
    step = clrjax.range_test_step(_make_step(tx), _state(model, tx), (X, Y), grid=grid, **FAST)
    loss = clrjax.range_test(loss_fn, model, (X, Y), optimizer=tx, grid=grid, **FAST)
    assert np.isfinite(step.losses[:, :5]).all()
    np.testing.assert_allclose(step.losses, loss.losses, **SAME)


@pytest.mark.filterwarnings("ignore:find_schedule. the winner")  # an edge winner is fine here
def test_find_schedule_on_a_module():
    model = make_mlp()
    choice = clrjax.find_schedule(
        loss_fn,
        model,
        (X[:96], Y[:96]),
        val_data=(X[96:], Y[96:]),
        total_steps=24,
        batch_size=16,
        search=clrjax.Search(range_test_steps=20, start_lr=1e-3, end_lr=1.0),
        execution=clrjax.Execution(progress=False),
    )
    assert choice.kind in ("one_cycle", "decay")
    assert 1e-3 < choice.learning_rate < 1.0


def test_a_step_that_replaces_a_held_leaf_with_a_traced_one_is_refused():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    leaky = lambda model, loss: eqx.tree_at(
        lambda m: m.activation, model, functools.partial(jax.nn.leaky_relu, negative_slope=loss)
    )
    step = _make_step(tx, replace=leaky)
    with pytest.raises(TypeError, match=r"replaced state\[0\]\.activation.*traced value"):
        clrjax.range_test_step(step, _state(make_mlp(), tx), (X, Y), **FAST)


def test_an_unhashable_leaf_is_refused():
    class Tagged(eqx.Module):
        mlp: eqx.nn.MLP
        tags: set

        def __call__(self, x):
            return self.mlp(x)

    with pytest.raises(TypeError, match=r"\.tags is a set, neither an array nor hashable"):
        clrjax.range_test(loss_fn, Tagged(make_mlp(), {"a"}), (X, Y), **FAST)


def test_init_fn_builds_a_module_per_seed():
    # a fresh lambda per call: init may rebuild its held leaves, the first ones are kept
    init_fn = lambda key: eqx.nn.MLP(D, 1, 8, 2, activation=lambda x: jnp.tanh(x), key=key)
    result = clrjax.range_test(
        loss_fn, None, (X, Y), model=clrjax.Model(init_fn=init_fn), seeds=[0, 1], **FAST
    )
    assert np.isfinite(result.losses[:, 0]).all()
    assert result.losses[0, 0] != result.losses[1, 0]


def test_a_held_leaf_built_from_the_lane_key_is_refused():
    def init_fn(key):
        slope = jax.random.uniform(key)  # traced: it differs per lane
        leaky = functools.partial(jax.nn.leaky_relu, negative_slope=slope)
        return eqx.tree_at(lambda m: m.activation, make_mlp(), leaky)

    with pytest.raises(TypeError, match=r"state\.params\.activation is not an array .*traced"):
        clrjax.range_test(
            loss_fn, None, (X, Y), model=clrjax.Model(init_fn=init_fn), seeds=[0, 1], **FAST
        )


def test_a_second_run_traces_nothing_again():
    class Net(eqx.Module):
        mlp: eqx.nn.MLP
        dropout: eqx.nn.Dropout  # Python numbers: the first run traces a step to see them kept

        def __call__(self, x):
            return self.mlp(self.dropout(x, inference=True))

    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    traces = []

    def train_step(state, batch):
        traces.append(1)
        return _make_step(tx)(state, batch)

    state = _state(Net(make_mlp(), eqx.nn.Dropout(0.5)), tx)
    first = clrjax.range_test_step(train_step, state, (X, Y), **FAST)
    count = len(traces)
    second = clrjax.range_test_step(train_step, state, (X, Y), **dict(FAST, end_lr=0.5))
    assert len(traces) == count
    assert np.isfinite(second.losses[0, :5]).all()
    assert not np.array_equal(first.losses, second.losses)
