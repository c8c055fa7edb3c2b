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
        return np.tile(base[:, None], (1, seeds)) + 0.01 * np.arange(seeds), "vmap/scan", True

    rungs = _race.successive_halving(train, 9, [10, 30, 90], [5, 2], [1, 1, 2])
    assert calls[0] == (list(range(9)), 10, 1)
    assert calls[1] == ([0, 1, 2, 3, 4], 30, 1)  # the 5 best of rung 0, in candidate order
    assert calls[2] == ([1, 2], 90, 2)
    assert [r.num_steps for r in rungs] == [10, 30, 90]
    assert rungs[-1].scores.shape == (2, 2)
    assert _race.winner(rungs) == 5 - 3  # of the last rung's [1, 2], 2 is nearer 5


def test_an_untrusted_rung_ends_the_race_and_the_last_trusted_one_decides():
    def train(cands, steps, seeds):
        scores = np.tile(cands[:, None].astype(float), (1, seeds))
        return (-scores if steps > 10 else scores), "vmap/scan", steps <= 10

    rungs = _race.successive_halving(train, 6, [10, 30, 90], [3, 1], [1, 1, 1])
    assert [r.num_steps for r in rungs] == [10, 30] and not rungs[-1].trusted
    assert _race.deciding_rung(rungs) is rungs[0]
    assert _race.winner(rungs) == 5  # rung 0's best, although rung 1 ranked it last


def test_a_failed_run_never_survives():
    def train(cands, steps, seeds):
        scores = np.ones((len(cands), seeds))
        scores[cands == 0] = np.nan  # candidate 0 diverged
        scores[cands == 1, 0] = 5.0  # one great seed does not hide a failed one
        scores[cands == 1, -1] = np.nan if seeds > 1 else 5.0
        return scores, "vmap/scan", True

    rungs = _race.successive_halving(train, 4, [5, 10], [2], [1, 2])
    assert 0 not in rungs[1].candidates
    assert np.isneginf(rungs[1].mean_scores[list(rungs[1].candidates).index(1)])


def test_rung_shapes_are_checked():
    with pytest.raises(ValueError, match="same rungs"):
        _race.successive_halving(lambda *a: None, 3, [1, 2], [1, 1], [1, 1])


def test_a_race_without_a_trusted_rung_has_no_deciding_rung():
    untrusted = _race.Rung(10, np.arange(2), np.ones((2, 1)), 0.0, "vmap/scan", trusted=False)
    with pytest.raises(ValueError, match="no rung of the race can rank its candidates"):
        _race.deciding_rung([untrusted, untrusted._replace(num_steps=30)])


def test_peak_bracket_spans_valley_to_twice_the_lowest_loss():
    picks = {"valley": 0.004, "steep": 0.01, "minimum": 0.05, "slide": 0.2, "steepest": 30.0}
    bracket = _candidates.peak_bracket(picks, ratio=2.5, upper=2.0)
    peaks = np.array(bracket.peaks)
    assert peaks[0] == pytest.approx(0.004) and peaks[-1] == pytest.approx(2 * 10 * 0.05)
    ratios = peaks[1:] / peaks[:-1]
    np.testing.assert_allclose(ratios, ratios[0])  # geometric
    assert ratios[0] <= 2.5 and len(peaks) == 8  # ceil(ln(250) / ln(2.5)) + 1 = 7 + 1
    raced = ", ".join(bracket.sources)
    for method in ("valley", "steep", "minimum", "slide"):
        assert method in raced
    assert bracket.outside == {"steepest": 30.0}
    # a broken curve (valley above the lowest loss): minimum x (1/3, 1, 3)
    flat = _candidates.peak_bracket({"valley": 5.0, "minimum": 0.1}, ratio=2.5, upper=2.0)
    np.testing.assert_allclose(flat.peaks, [0.1 / 3, 0.1, 0.3])
    nothing = _candidates.peak_bracket({"valley": np.nan, "minimum": np.nan}, ratio=2.5, upper=2)
    assert nothing.peaks == ()


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
