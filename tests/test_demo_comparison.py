"""Tests for the training comparison behind ``clrjax train-demo`` and examples/seed_claim.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax
from clrjax._engine.feeding import batch_orders, numpy_rng
from clrjax.demo import _comparison as _train_demo
from clrjax.demo import _data as _demo_data

Arm = _train_demo.Arm


@pytest.fixture(scope="module")
def tiny_data():
    """A separable 3-class problem small enough to train in a fraction of a second."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3.0

    def sample(n):
        y = rng.integers(0, 3, size=n).astype(np.int32)
        x = (centres[y] + rng.normal(size=(n, 8))).astype(np.float32)
        return x, y

    x_train, y_train = sample(100)  # 6 batches of 16 per epoch, 4 examples dropped
    x_test, y_test = sample(60)
    return _demo_data.Dataset(x_train, y_train, x_test, y_test, 3)


def _init(key):
    return _demo_data.init_mlp(key, (8, 16, 3))


ARMS = (
    Arm("c", "constant", 0.05, "x"),
    Arm("d", "decay", 0.05, "x"),
    Arm("o", "one_cycle", 0.05, "x"),
)


def _train(data, arms, seeds, epochs=2):
    return _train_demo.train_arms(arms, seeds, data, _init, epochs=epochs, batch_size=16)


@pytest.fixture(scope="module")
def lanes(tiny_data):
    """Three arms x two seeds, as lanes of one program."""
    return _train(tiny_data, ARMS, [3, 7])


def test_epochs_to_reach_counts_never_as_minus_one():
    acc = np.array([[[0.2, 0.5, 0.5], [0.6, 0.7, 0.9]], [[0.1, 0.1, 0.1], [0.9, 0.9, 0.9]]])
    target = np.array([0.5, 0.8])
    np.testing.assert_array_equal(
        _train_demo.epochs_to_reach(acc, target[None, :]), [[2, 3], [-1, 1]]
    )


def test_arm_schedules_per_kind():
    total, per_epoch = 40, 10
    lr, mom = _train_demo.arm_schedules(
        [*ARMS, Arm("c2", "constant", 0.3, "x")],
        total,
        steps_per_epoch=per_epoch,
        decay_rate=0.5,
        momentum=0.9,
    )
    steps = jnp.arange(total)
    assert lr.shape == mom.shape == (total, 4) and lr.dtype == np.float32
    np.testing.assert_array_equal(lr[:, 0], np.float32(0.05))
    np.testing.assert_array_equal(lr[:, 3], np.float32(0.3))
    np.testing.assert_allclose(lr[:, 1], 0.05 * 0.5 ** (np.arange(total) // per_epoch), rtol=1e-6)
    np.testing.assert_allclose(lr[:, 2], clrjax.one_cycle_schedule(total, 0.05)(steps), rtol=1e-6)
    np.testing.assert_allclose(mom[:, 2], clrjax.one_cycle_momentum_schedule(total)(steps))
    np.testing.assert_allclose(mom[:, [0, 1, 3]], 0.9)


def test_train_arms_shapes_and_seeds(tiny_data, lanes):
    assert lanes.test_acc.shape == lanes.train_loss.shape == (3, 2, 2)
    assert lanes.diverged.shape == (3, 2) and not lanes.diverged.any()
    assert np.all(np.isfinite(lanes.train_loss))
    # The same seed: the same weights and batches, so constant and decay (whose
    # learning rates differ from the second epoch on) share their first epoch.
    np.testing.assert_allclose(lanes.train_loss[0, :, 0], lanes.train_loss[1, :, 0], rtol=1e-6)
    assert not np.allclose(lanes.train_loss[0, :, 1], lanes.train_loss[1, :, 1])
    assert not np.allclose(lanes.train_loss[0, 0], lanes.train_loss[0, 1])  # other seed
    # A lane trained alone matches the same lane trained beside others.
    alone = _train(tiny_data, ARMS[1:2], [7])
    np.testing.assert_allclose(alone.train_loss[0, 0], lanes.train_loss[1, 1], rtol=1e-5)
    np.testing.assert_allclose(alone.test_acc[0, 0], lanes.test_acc[1, 1])
    assert np.all(lanes.test_acc[:, :, -1] > 0.9)  # every arm learns this easy problem
    assert lanes.seconds > 0 and lanes.cpu_seconds > 0 and lanes.strategy


def test_train_arms_is_a_plain_optax_loop_over_the_engines_batches(tiny_data, lanes):
    """The constant arm is SGD + Nesterov on the engine's data order for its seed."""
    seed, epochs, bs = 7, 2, 16
    key = jax.random.key(0)  # train_arms' default
    params = _init(jax.random.fold_in(key, seed))
    per_epoch = len(tiny_data.x_train) // bs
    orders = batch_orders(
        len(tiny_data.x_train), bs, epochs * per_epoch, True, numpy_rng(key, seed)
    )
    opt = optax.sgd(0.05, momentum=0.9, nesterov=True)
    state = opt.init(params)

    @jax.jit
    def step(params, state, batch):
        value, grads = jax.value_and_grad(_demo_data.mlp_loss)(params, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    for epoch in range(epochs):
        losses = []
        for idx in orders[epoch * per_epoch : (epoch + 1) * per_epoch]:
            params, state, value = step(
                params, state, (tiny_data.x_train[idx], tiny_data.y_train[idx])
            )
            losses.append(value)
        np.testing.assert_allclose(lanes.train_loss[0, 1, epoch], np.mean(losses), rtol=1e-5)
        expected = _demo_data.mlp_accuracy(params, (tiny_data.x_test, tiny_data.y_test))
        np.testing.assert_allclose(lanes.test_acc[0, 1, epoch], expected)


def test_train_arms_counts_a_diverged_run_as_zero(tiny_data):
    out = _train(tiny_data, [Arm("huge", "constant", 1e30, "x")], [0], epochs=2)
    assert out.diverged.tolist() == [[True]]
    np.testing.assert_array_equal(out.test_acc[0, 0, -1], 0.0)


def test_train_arms_rejects_a_batch_larger_than_the_data(tiny_data):
    with pytest.raises(ValueError, match="batch_size"):
        _train_demo.train_arms(ARMS, [0], tiny_data, _init, epochs=1, batch_size=1000)


def _synthetic(final, names_kinds, diverged=None):
    """A ComparisonResult with given final accuracies (%) and a rising first epoch."""
    final = np.asarray(final, float) / 100.0
    acc = np.stack([final * 0.5, final], axis=-1)
    arms = tuple(Arm(n, k, 0.1 * (i + 1), s) for i, (n, k, s) in enumerate(names_kinds))
    return _train_demo.ComparisonResult(
        task=_train_demo.TASKS["digits"],
        arms=arms,
        seeds=np.arange(100, 100 + final.shape[1]),
        test_acc=acc,
        train_loss=np.zeros_like(acc),
        diverged=np.zeros(final.shape, bool) if diverged is None else np.asarray(diverged),
        choice=None,
        suggestion=0.2,
        settings={},
        find_seconds=1.0,
        find_cpu_seconds=1.0,
        winner_seconds=1.0,
        winner_cpu_seconds=1.0,
        train_seconds=1.0,
    )


ARM_SET = (
    ("baseline", "constant", "baseline"),
    ("find_schedule", "one_cycle", "find_schedule"),
    ("hand-picked decay 0.3", "decay", "hand-picked"),
    ("hand-picked decay 0.4", "decay", "hand-picked"),
)


@pytest.mark.parametrize(
    ("found", "word"),
    [
        ([70.0, 72.0, 71.0], "better"),
        ([59.0, 60.0, 58.0], "worse"),
        ([61.0, 59.0, 62.0], "no clear difference"),
    ],
)
def test_verdict_with_synthetic_numbers(found, word):
    r = _synthetic([[60.0, 61.0, 59.0], found, [70, 70, 70], [71, 72, 73]], ARM_SET)
    line = _train_demo.verdict(r)
    assert line.startswith("verdict: find_schedule (one-cycle, peak 0.2) ends at")
    assert "vs the baseline's 60.0% (constant 0.1)" in line
    assert line.endswith(f"(paired): {word}.")
    assert r.best_hand_picked() == 3
    assert _synthetic([[1, 2], [1, 2]], ARM_SET[:2]).best_hand_picked() is None


def test_paired_and_holds():
    mean, se = _train_demo.paired(np.array([3.0, 4.0, 5.0]), np.array([1.0, 1.0, 1.0]))
    assert mean == pytest.approx(3.0) and se == pytest.approx(np.std([2, 3, 4], ddof=1) / 3**0.5)
    assert _train_demo.holds(mean, se) is True and _train_demo.holds(-mean, se) is False
    assert _train_demo.holds(0.1, 1.0) is None
    assert _train_demo.holds(*_train_demo.paired(np.array([1.0]), np.array([0.0]))) is None


def test_format_table_with_synthetic_numbers():
    r = _synthetic(
        [[60.0, 61.0], [70.0, 0.0], [60.5, 60.5], [59.0, 59.0]],
        ARM_SET,
        [[0, 0], [0, 1], [0, 0], [0, 0]],
    )
    lines = _train_demo.format_table(r).splitlines()
    assert len(lines) == 2 + 4 and all(line.count("|") == 7 for line in lines)
    assert lines[2].startswith("| baseline | 0.1, constant | 60.5 ± 0.5 | - |")
    assert "(1/2 diverged, counted as 0)" in lines[3]
    assert lines[3].startswith("| find_schedule | one-cycle, peak 0.2 | 35.0 ± 35.0 (1/2")
    # hand-picked 0.3 reaches the baseline's final accuracy on one seed only
    assert "(never on 1/2)" in lines[4]
    assert "- (never on 2/2)" in lines[5] and "(lower)" in lines[5]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "cifar10"}, "task"),
        ({"seeds": 0}, "seeds"),
        ({"seeds": 2.5}, "seeds"),
        ({"seeds": True}, "seeds"),
        ({"epochs": 0}, "epochs must be an int >= 1; got 0"),
        ({"range_test_steps": 1}, "range_test_steps must be an int >= 7; got 1"),
        ({"method": "best"}, "method"),
        ({"hand_picked": [("cosine", 0.1)]}, "hand_picked"),
        ({"batch_size": 300}, "batch_size must be at most 270"),
    ],
)
def test_run_comparison_validates_arguments(kwargs, match, monkeypatch):
    monkeypatch.setattr(clrjax, "find_schedule", pytest.fail)
    with pytest.raises(ValueError, match=match):
        _train_demo.run_comparison(**kwargs)


def test_run_comparison_reports_a_failed_find_schedule(monkeypatch):
    def no_suggestion(*args, **kwargs):
        raise ValueError("the range test gave no suggestion on any lane")

    monkeypatch.setattr(clrjax, "find_schedule", no_suggestion)
    with pytest.raises(_train_demo.FindScheduleFailed, match="find_schedule failed: the range"):
        _train_demo.run_comparison("digits", hidden=(8,))


@pytest.fixture(scope="module")
def digits_result():
    """Digits with the real find_schedule, shrunk to two epochs and two seeds."""
    return _train_demo.run_comparison(
        "digits", epochs=2, seeds=2, hidden=(16,), range_test_steps=30, progress=False
    )


def test_run_comparison_on_digits(digits_result):
    r = digits_result
    choice = r.choice
    assert r.arm_names == (
        "baseline",
        "minimum",
        "minimum + decay",
        "find_schedule",
        "hand-picked decay 0.1",
    )
    assert r.test_acc.shape == r.train_loss.shape == (5, 2, 2) and r.diverged.shape == (5, 2)
    assert r.seeds.tolist() == [100, 101]
    # The race planned for the full budget on the full split's epochs, on 80% of it.
    per_epoch = 1348 // 32
    assert (choice.total_steps, choice.steps_per_epoch) == (2 * per_epoch, per_epoch)
    assert r.settings["find_schedule data"].startswith("first 1078 training examples")
    assert r.settings["total steps"] == 2 * per_epoch
    # The suggestion arms use the race's own range test; find_schedule's arm its answer.
    spread = choice.range_test.suggest_spread("minimum")[0][1]
    assert r.suggestion == spread.median and r.arms[1].lr == r.arms[2].lr == r.suggestion
    found = r.arms[3]
    assert (found.kind, found.lr) == (choice.kind, choice.learning_rate)
    lr, mom = _train_demo.arm_schedules(
        [found], choice.total_steps, steps_per_epoch=per_epoch, decay_rate=0.97, momentum=0.9
    )
    steps = jnp.arange(choice.total_steps)
    np.testing.assert_allclose(lr[:, 0], choice.schedule(steps), rtol=1e-6)
    if choice.momentum is not None:
        np.testing.assert_allclose(mom[:, 0], choice.momentum(steps), rtol=1e-6)
    assert np.all(r.final > 50.0)  # every arm learns digits in two epochs
    assert r.find_seconds > r.winner_seconds > 0 and r.train_seconds > 0
    assert r.find_cpu_seconds > 0 and r.winner_cpu_seconds > 0


def test_format_race_and_figure(digits_result):
    choice = digits_result.choice
    lines = _train_demo.format_race(choice).splitlines()
    assert len(lines) == 2 + len(choice.candidates)
    assert sum("(winner)" in line for line in lines) == 1
    assert lines[0].count("rung ") == len(choice.rungs)
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    fig = _train_demo.comparison_figure(digits_result)
    assert len(fig.axes) == 3
    labels = [line.get_label().split(":")[0] for line in fig.axes[2].lines]
    assert labels == [*digits_result.arm_names, "baseline final (mean)"]
    matplotlib.pyplot.close(fig)
    ax = _train_demo.plot_results(digits_result, arms=["baseline", "find_schedule"])
    assert [line.get_label().split(":")[0] for line in ax.lines[:2]] == [
        "baseline",
        "find_schedule",
    ]
    with pytest.raises(ValueError, match="arms"):
        _train_demo.plot_results(digits_result, arms=["constant"], ax=ax)
    matplotlib.pyplot.close(ax.figure)
