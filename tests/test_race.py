"""Tests for successive halving (clrjax._race) and the candidate schedules (clrjax._candidates)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax
from clrjax import _candidates, _race, _training


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


def test_a_rung_without_any_finite_score_is_refused():
    # Regression: the race went on, and candidate 0 won with a score of -inf.
    def nan_everywhere(cands, steps, seeds):
        return np.full((len(cands), seeds), np.nan), "vmap/scan", True

    with pytest.raises(ValueError, match=r"rung 1 \(10 steps\).*val_metric.*val_data"):
        _race.successive_halving(nan_everywhere, 4, [10, 30], [2], [1, 1])

    def nan_when_long(cands, steps, seeds):  # the longer rung fails, untrusted or not
        scores = np.full((len(cands), seeds), np.nan if steps > 10 else 1.0)
        return scores, "vmap/scan", steps <= 10

    with pytest.raises(ValueError, match=r"rung 2 \(30 steps\)"):
        _race.successive_halving(nan_when_long, 4, [10, 30], [2], [1, 1])


def test_unscored_lists_the_candidates_with_a_failed_run():
    def train(cands, steps, seeds):
        scores = np.ones((len(cands), seeds)) * cands[:, None]
        scores[cands == 1] = np.inf  # an Inf score is no score either
        if seeds > 1:
            scores[cands == 3, -1] = np.nan  # one failed seed is enough
        return scores, "vmap/scan", True

    rungs = _race.successive_halving(train, 5, [5, 10], [3], [1, 2])
    assert rungs[1].candidates.tolist() == [2, 3, 4]
    assert _race.unscored(rungs).tolist() == [1, 3]
    assert _race.winner(rungs) == 4


def test_ctrl_c_in_a_rung_gives_the_finished_rungs():
    def train(cands, steps, seeds):
        if steps > 10:
            raise KeyboardInterrupt
        return np.tile(cands[:, None].astype(float), (1, seeds)), "vmap/scan", True

    class Stopped(KeyboardInterrupt):
        def __init__(self, rungs):
            self.rungs = rungs

    with pytest.raises(Stopped) as info:
        _race.successive_halving(train, 4, [10, 30], [2], [1, 1], Stopped)
    assert [r.num_steps for r in info.value.rungs] == [10]
    with pytest.raises(KeyboardInterrupt) as plain:  # without a callback: as it was
        _race.successive_halving(train, 4, [10, 30], [2], [1, 1])
    assert type(plain.value) is KeyboardInterrupt


@pytest.mark.parametrize("num_steps", [_candidates.MIN_RANGE_TEST_STEPS, 9, 10, 20])
def test_min_range_test_steps_is_what_the_minimum_pick_needs(num_steps):
    lrs = np.geomspace(1e-4, 1.0, num_steps)
    losses = 1 + (np.log10(lrs) + 2) ** 2
    assert np.isfinite(clrjax.suggest(lrs, losses, "minimum"))
    short = np.geomspace(1e-4, 1.0, _candidates.MIN_RANGE_TEST_STEPS - 1)
    assert np.isnan(clrjax.suggest(short, 1 + (np.log10(short) + 2) ** 2, "minimum"))
    bracket = _candidates.peak_bracket(
        {m: clrjax.suggest(lrs, losses, m) for m in clrjax.SUGGESTION_METHODS},
        ratio=2.5,
        upper=2.0,
    )
    assert bracket.peaks


def test_a_rung_too_big_for_the_memory_is_refused_naming_total_steps(monkeypatch):
    need = _training.rung_host_bytes(1000, num_lanes=4, num_orders=2, batch_size=32)
    assert need == 1000 * (16 + 12 * 2 * 32 + 4 * 42)
    monkeypatch.setattr(_training, "host_memory_budget", lambda: float(need))
    _training.check_rung_memory(9000, 1000, 4, 2, 32)  # fits exactly
    with pytest.raises(MemoryError, match=r"total_steps=9000: a race rung of 4 lanes x 1001"):
        _training.check_rung_memory(9000, 1001, 4, 2, 32)


def test_a_rung_grows_only_by_runs_of_its_budget_and_seeds():
    rung = _race.Rung(10, np.array([0, 1]), np.array([[1.0], [2.0]]), 0.5, "vmap")
    for more in (
        _race.Rung(20, np.array([2]), np.array([[3.0]]), 0.25, "vmap"),  # another budget
        _race.Rung(10, np.array([2]), np.array([[3.0, 3.0]]), 0.25, "vmap"),  # two seeds
    ):
        with pytest.raises(ValueError, match="a rung grows only by runs of its own budget"):
            _race.grown(rung, more)
