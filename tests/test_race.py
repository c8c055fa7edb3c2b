"""Tests for successive halving (clrjax._race) and the candidate schedules (clrjax._candidates)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax
from clrjax import _candidates, _race


def test_successive_halving_keeps_the_best_and_reruns_them_longer():
    calls = []

    def train(cands, steps, seeds):
        calls.append((cands.tolist(), steps, seeds))
        # candidate 2 is best on short runs, candidate 5 on long ones
        base = -np.abs(cands - (2 if steps < 50 else 5)).astype(float)
        return np.tile(base[:, None], (1, seeds)) + 0.01 * np.arange(seeds), "vmap/scan"

    rungs = _race.successive_halving(train, 9, [10, 30, 90], [5, 2], [1, 1, 2])
    assert calls[0] == (list(range(9)), 10, 1)
    assert calls[1] == ([0, 1, 2, 3, 4], 30, 1)  # the 5 best of rung 0, in candidate order
    assert calls[2] == ([1, 2], 90, 2)
    assert [r.num_steps for r in rungs] == [10, 30, 90]
    assert rungs[-1].scores.shape == (2, 2)


def test_a_failed_run_never_survives():
    def train(cands, steps, seeds):
        scores = np.ones((len(cands), seeds))
        scores[cands == 0] = np.nan  # candidate 0 diverged
        scores[cands == 1, 0] = 5.0  # one great seed does not hide a failed one
        scores[cands == 1, -1] = np.nan if seeds > 1 else 5.0
        return scores, "vmap/scan"

    rungs = _race.successive_halving(train, 4, [5, 10], [2], [1, 2])
    assert 0 not in rungs[1].candidates
    assert np.isneginf(rungs[1].mean_scores[list(rungs[1].candidates).index(1)])


def test_rung_shapes_are_checked():
    with pytest.raises(ValueError, match="same rungs"):
        _race.successive_halving(lambda *a: None, 3, [1, 2], [1, 1], [1, 1])


def test_peak_bracket_covers_every_method_and_the_valley_to_minimum_spread():
    lrs = np.geomspace(1e-5, 10, 100)
    x = np.log10(lrs)
    losses = 2.3 - 1.8 / (1 + np.exp(-(x + 2.0) * 3)) + np.where(x > 0, (x * 3) ** 2, 0)
    peaks = _candidates.peak_bracket(lrs, losses, spread=4, merge_ratio=1.25)
    values = np.array([p for p, _ in peaks])
    assert np.all(np.diff(values) / values[:-1] >= 0.25 - 1e-12)  # merged below 1.25x
    sources = ", ".join(s for _, s in peaks)
    for method in (*clrjax.SUGGESTION_METHODS, "minimum/10", "spread"):
        assert method in sources
    minimum = lrs[np.argmin(losses)]
    assert values.max() == pytest.approx(minimum, rel=0.25)
    assert _candidates.peak_bracket(lrs, np.full(100, np.nan), spread=4, merge_ratio=1.25) == []


def test_kind_schedules_scale_to_any_budget():
    lr, mom = _candidates.kind_schedules(
        "one_cycle", 0.4, 90, steps_per_epoch=10, decay_rate=0.97, momentum=0.9
    )
    ref_lr = clrjax.one_cycle_schedule(90, 0.4)
    steps = jnp.arange(90)
    np.testing.assert_allclose(lr(steps), ref_lr(steps))
    np.testing.assert_allclose(mom(steps), clrjax.one_cycle_momentum_schedule(90)(steps))
    decay, hold = _candidates.kind_schedules(
        "decay", 0.4, 90, steps_per_epoch=10, decay_rate=0.97, momentum=0.9
    )
    staircase = optax.exponential_decay(0.4, 10, 0.97, staircase=True)
    np.testing.assert_allclose(decay(steps), staircase(steps), rtol=1e-6)
    np.testing.assert_array_equal(hold(steps), np.full(90, 0.9, np.float32))
    no_momentum = _candidates.kind_schedules(
        "one_cycle", 0.4, 90, steps_per_epoch=10, decay_rate=0.97, momentum=None
    )
    assert no_momentum[1] is None
    with pytest.raises(ValueError, match="kind"):
        _candidates.kind_schedules("cosine", 0.4, 9, steps_per_epoch=1, decay_rate=1, momentum=None)


def test_schedule_arrays_are_traceable_per_lane():
    cands = [
        _candidates.Candidate("one_cycle", 0.1, {}, "valley"),
        _candidates.Candidate("decay", 0.2, {}, "minimum"),
    ]
    lrs, moms = _candidates.schedule_arrays(
        cands, 30, steps_per_epoch=3.0, decay_rate=0.5, momentum=0.9
    )
    assert lrs.shape == moms.shape == (30, 2)
    assert lrs[:, 0].max() == pytest.approx(0.1, rel=1e-3) and lrs[0, 1] == pytest.approx(0.2)
    assert lrs[3, 1] == pytest.approx(0.1)
    traced = jax.jit(
        lambda p: _candidates.kind_schedules(
            "one_cycle", p, 30, steps_per_epoch=3.0, decay_rate=0.5, momentum=None
        )[0](10)
    )
    assert float(traced(0.1)) == pytest.approx(float(lrs[10, 0]), rel=1e-6)
