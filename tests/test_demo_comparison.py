"""Tests for the training comparison behind ``clrjax train-demo`` and examples/seed_claim.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax
from clrjax.demo import _comparison as _train_demo
from clrjax.demo import _data as _demo_data


@pytest.fixture(scope="module")
def tiny_data():
    """A separable 3-class problem small enough to train in a fraction of a second."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3.0

    def sample(n):
        y = rng.integers(0, 3, size=n).astype(np.int32)
        x = (centres[y] + rng.normal(size=(n, 8))).astype(np.float32)
        return x, y

    x_train, y_train = sample(96)
    x_test, y_test = sample(60)
    return _demo_data.Dataset(x_train, y_train, x_test, y_test, 3)


def _init(key):
    return _demo_data.init_mlp(key, (8, 16, 3))


def _train(data, kinds, lrs, seeds, epochs=2):
    return _train_demo.train_lanes(
        _demo_data.mlp_loss,
        _demo_data.mlp_accuracy,
        _init,
        data,
        np.asarray(kinds),
        np.asarray(lrs),
        np.asarray(seeds),
        epochs=epochs,
        batch_size=16,
    )


def test_epochs_to_reach_counts_never_as_minus_one():
    acc = np.array([[[0.2, 0.5, 0.5], [0.6, 0.7, 0.9]], [[0.1, 0.1, 0.1], [0.9, 0.9, 0.9]]])
    target = np.array([0.5, 0.8])
    np.testing.assert_array_equal(
        _train_demo.epochs_to_reach(acc, target[None, :]), [[2, 3], [-1, 1]]
    )


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_lane_schedules_select_the_arm_under_jit_and_vmap(kind):
    total, per_epoch = 40, 10
    make = lambda k, lr: _train_demo._lane_schedules(
        k, lr, total_steps=total, steps_per_epoch=per_epoch, momentum=0.9, decay_rate=0.5
    )
    steps = jnp.arange(total)
    peak = jnp.array([0.1, 0.3])

    @jax.jit
    def both(k, lr):
        lr_fn, mom_fn = make(k, lr)
        return jax.vmap(lr_fn)(steps), jax.vmap(mom_fn)(steps)

    lrs, moms = jax.vmap(both, in_axes=(None, 0))(jnp.int32(kind), peak)
    for row_lr, row_mom, p in zip(lrs, moms, [0.1, 0.3], strict=True):
        if kind == 0:
            expected_lr, expected_mom = np.full(total, p), np.full(total, 0.9)
        elif kind == 1:
            expected_lr = p * 0.5 ** (np.arange(total) // per_epoch)
            expected_mom = np.full(total, 0.9)
        else:
            expected_lr = jax.vmap(clrjax.one_cycle_schedule(total, p))(steps)
            expected_mom = jax.vmap(clrjax.one_cycle_momentum_schedule(total))(steps)
        np.testing.assert_allclose(row_lr, expected_lr, rtol=1e-5)
        np.testing.assert_allclose(row_mom, expected_mom, rtol=1e-6)


@pytest.fixture(scope="module")
def lanes(tiny_data):
    """Five lanes: the three schedule kinds, then a repeat of lane 0 with another seed and
    with the same seed."""
    return _train(tiny_data, [0, 1, 2, 0, 0], [0.05] * 5, [0, 0, 0, 1, 0])


def test_train_lanes_are_independent_and_seeded(tiny_data, lanes):
    acc, loss = lanes
    assert acc.shape == loss.shape == (5, 2)
    assert np.all(np.isfinite(loss))
    np.testing.assert_array_equal(loss[4], loss[0])
    assert not np.allclose(loss[3], loss[0])
    # A lane trained alone matches the same lane trained beside others.
    alone_acc, alone_loss = _train(tiny_data, [1], [0.05], [0])
    np.testing.assert_allclose(alone_loss[0], loss[1], rtol=1e-5)
    np.testing.assert_allclose(alone_acc[0], acc[1])
    # On this separable problem every arm learns.
    assert np.all(acc[:, -1] > 0.9)


def test_train_lanes_matches_a_plain_optax_loop(tiny_data, lanes):
    """The constant arm is ordinary SGD + Nesterov with the lane's shuffles."""
    acc, loss = lanes[0][3], lanes[1][3]
    init_key, data_key = jax.random.split(jax.random.key(1))
    params = _init(init_key)
    opt = optax.sgd(0.05, momentum=0.9, nesterov=True)
    state = opt.init(params)

    @jax.jit
    def step(params, state, batch):
        value, grads = jax.value_and_grad(_demo_data.mlp_loss)(params, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    n, bs = len(tiny_data.x_train), 16
    for epoch in range(2):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, epoch), n))
        losses = []
        for idx in order.reshape(n // bs, bs):
            params, state, value = step(
                params, state, (tiny_data.x_train[idx], tiny_data.y_train[idx])
            )
            losses.append(value)
        np.testing.assert_allclose(loss[epoch], np.mean(losses), rtol=1e-4)
        expected_acc = _demo_data.mlp_accuracy(params, tiny_data.x_test, tiny_data.y_test)
        np.testing.assert_allclose(acc[epoch], expected_acc)


def test_train_lanes_rejects_a_batch_larger_than_the_data(tiny_data):
    with pytest.raises(ValueError, match="batch_size"):
        _train_demo.train_lanes(
            _demo_data.mlp_loss,
            _demo_data.mlp_accuracy,
            _init,
            tiny_data,
            np.array([0]),
            np.array([0.1]),
            np.array([0]),
            epochs=1,
            batch_size=1000,
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "cifar10"}, "dataset"),
        ({"seeds": 0}, "seeds"),
        ({"seeds": 2.5}, "seeds"),
        ({"seeds": True}, "seeds"),
        ({"suggest_method": "best"}, "suggest_method"),
        ({"suggest_method": ()}, "suggest_method"),
    ],
)
def test_run_train_demo_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _train_demo.run_train_demo(**kwargs)


@pytest.fixture(scope="module")
def digits_result():
    """Digits with the real range test, shrunk to a few epochs and two seeds."""
    return _train_demo.run_train_demo(
        "digits",
        epochs=3,
        seeds=2,
        batch_size=64,
        hidden=(16,),
        suggest_method=("valley", "minimum"),
        range_test_steps=40,
    )


def test_run_train_demo_shapes_and_settings(digits_result):
    r = digits_result
    assert set(r.suggestions) == {"valley", "minimum"}
    lrs = r.range_test.lrs
    for method, lr in r.suggestions.items():
        lanes = r.lane_suggestions[method]
        assert lanes.shape == (2,)
        np.testing.assert_allclose(lanes, r.range_test.suggest(method))
        assert lr == pytest.approx(np.exp(np.mean(np.log(lanes))))
        assert lrs[0] <= lr <= lrs[-1]
    assert r.arms == _train_demo.make_arms(0.01, r.suggestions)
    assert r.test_acc.shape == r.train_loss.shape == (len(r.arms), 2, 3)
    assert np.all(np.isfinite(r.train_loss[0]))
    np.testing.assert_array_equal(r.target, r.test_acc[0, :, -1])
    assert r.settings["epochs"] == 3 and r.settings["steps per epoch"] == 1348 // 64
    assert r.range_test.losses.shape == (2, 40)
    # Every arm of one seed starts from the same weights, so the baseline always
    # reaches its own final accuracy.
    assert np.all(r.epochs_to_target[0] >= 1)
    # The one-cycle and constant arms of one seed start from the same weights but
    # (with different first learning rates) end elsewhere.
    assert not np.allclose(r.train_loss[1], r.train_loss[3])


def test_format_table_and_plot(digits_result):
    table = _train_demo.format_table(digits_result)
    lines = table.splitlines()
    assert len(lines) == 2 + len(digits_result.arms)
    assert lines[2].startswith("| baseline | 0.01 |")
    assert lines[3].startswith("| constant [valley] |")
    assert all(line.count("|") == 7 for line in lines)
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ax = _train_demo.plot_results(digits_result)
    assert len(ax.lines) == 1 + len(_train_demo.KINDS) + 1  # arms + target line
    matplotlib.pyplot.close(ax.figure)
    ax = _train_demo.plot_results(digits_result, arms=["baseline", "decay [minimum]"])
    assert [line.get_label().split(",")[0] for line in ax.lines[:2]] == [
        "baseline",
        "decay [minimum]",
    ]
    with pytest.raises(ValueError, match="arms"):
        _train_demo.plot_results(digits_result, arms=["constant"], ax=ax)
    matplotlib.pyplot.close(ax.figure)


def test_run_train_demo_with_a_given_lr_skips_the_range_test(monkeypatch):
    def no_range_test(*args, **kwargs):
        raise AssertionError("range test should not run")

    monkeypatch.setattr(clrjax, "range_test", no_range_test)
    r = _train_demo.run_train_demo("digits", epochs=1, seeds=1, batch_size=256, hidden=(8,), lr=0.2)
    assert r.suggestions == {"given": 0.2} and r.range_test is None
    assert r.arm_names == ("baseline", "constant [given]", "decay [given]", "one-cycle [given]")
    np.testing.assert_allclose(r.peak_lrs, [0.01, 0.2, 0.2, 0.2])
