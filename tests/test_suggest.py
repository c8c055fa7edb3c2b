"""Tests for clrjax._suggest: parity with torch-lr-finder and fastai, edge cases."""

import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import clrjax
from clrjax._suggest import _valley_index

GOLDENS = json.loads((pathlib.Path(__file__).parent / "data" / "suggest_goldens.json").read_text())[
    "curves"
]
FASTAI_METHODS = ("valley", "steep", "minimum", "slide")


def _kind(name):
    end = GOLDENS[name]["end"]
    return None if end is None else end["kind"]


def _curve(name):
    """The curve as a clrjax lane holds it: NaN after its end, inf at an inf end."""
    record = GOLDENS[name]
    losses = np.array([np.nan if v is None else v for v in record["losses"]])
    if _kind(name) == "inf":
        losses[record["end"]["step"]] = np.inf
    return np.array(record["lrs"]), losses


def _result(name):
    """A one-lane RangeTestResult holding the curve, as the range test would."""
    lrs, losses = _curve(name)
    end = GOLDENS[name]["end"]
    return clrjax.RangeTestResult(
        lrs=lrs,
        losses=losses[None],
        smoothed=losses[None],
        diverged_at=np.array([-1 if end is None else end["step"]]),
        hparams={},
        grid_names=(),
    )


def _expected(value):
    return np.nan if value is None else value


def _reference(name, method):
    record = GOLDENS[name]
    if method == "steepest":
        return _expected(record["torch_lr_finder"]["steepest"])
    return _expected(record["fastai"][method])


def _options(method):
    return {"fastai_compat": True} if method == "valley" else {}


def _nan_in_steepest_window(name):
    """torch-lr-finder's steepest on a record with NaN inside its trimmed window."""
    return _kind(name) == "nan" and GOLDENS[name]["end"]["step"] < len(GOLDENS[name]["lrs"]) - 5


def _fastai_points(name):
    """The learning rates fastai's lr_find hands its suggestion functions."""
    lrs, losses = _curve(name)
    window = slice(lrs.shape[0] // 10, GOLDENS[name]["record_length"] - 5)
    bad = np.flatnonzero(np.isnan(losses[window]))
    return lrs[window][: bad[0] if bad.size else None]


# (curve, method) pairs where clrjax gives the reference's number; the others are
# torch-lr-finder's steepest on a NaN record: see test_steepest_on_a_nan_record.
PARITY = [
    (name, method)
    for name in sorted(GOLDENS)
    for method in clrjax.SUGGESTION_METHODS
    if not (method == "steepest" and _nan_in_steepest_window(name))
]


def test_methods_listed():
    assert clrjax.SUGGESTION_METHODS == ("valley", "steep", "minimum", "slide", "steepest")


@pytest.mark.parametrize(("name", "method"), PARITY)
def test_result_suggest_matches_the_references(name, method):
    # Each lane's record is worked out from how it ends (diverged_at, the raw loss there).
    got = _result(name).suggest(method, **_options(method))
    np.testing.assert_equal(got, [_reference(name, method)])


@pytest.mark.parametrize(("name", "method"), PARITY)
def test_bare_curves_match_the_references_with_the_right_convention(name, method):
    lrs, losses = _curve(name)
    kind = _kind(name)
    if kind == "inf":  # the history as the references recorded it: up to the inf step
        stop = GOLDENS[name]["record_length"]
        skip = {"skip_start": lrs.shape[0] // 10} if method != "steepest" else {}
        got = clrjax.suggest(
            lrs[:stop], losses[:stop], method, non_finite="recorded", **skip, **_options(method)
        )
    else:
        non_finite = "recorded" if kind == "nan" else "stopped"
        got = clrjax.suggest(lrs, losses, method, non_finite=non_finite, **_options(method))
    np.testing.assert_equal(got, _reference(name, method))


@pytest.mark.parametrize("name", [n for n in sorted(GOLDENS) if _nan_in_steepest_window(n)])
def test_steepest_on_a_nan_record(name):
    # torch-lr-finder keeps recording NaN, and np.argmin stops at the first NaN
    # gradient: it suggests the last finite point. clrjax reads the finite part,
    # [10 : min(d, steps - 5)], as fastai does for its own methods.
    lrs, losses = _curve(name)
    step = GOLDENS[name]["end"]["step"]
    assert GOLDENS[name]["torch_lr_finder"]["steepest"] == lrs[step - 1]
    expected = clrjax.suggest(lrs[:step], losses[:step], "steepest", skip_end=0)
    assert _result(name).suggest("steepest") == [expected]
    assert clrjax.suggest(lrs, losses, "steepest", non_finite="recorded") == expected


def test_non_finite_conventions():
    # NaN from step 60 on, as recorded losses: trim [10:95], then cut at 60.
    lrs, losses = _curve("nan_tail")
    recorded = clrjax.suggest(lrs, losses, "minimum", non_finite="recorded")
    assert recorded == clrjax.suggest(lrs[:60], losses[:60], "minimum", skip_end=0, skip_start=10)
    assert recorded == GOLDENS["nan_tail"]["fastai"]["minimum"]
    # As padding after a stop: the record is steps 0-59, trimmed to [10:55].
    stopped = clrjax.suggest(lrs, losses, "minimum")
    assert stopped == clrjax.suggest(lrs[:55], losses[:55], "minimum", skip_end=0, skip_start=10)
    assert stopped != recorded
    with pytest.raises(ValueError, match="non_finite must be one of 'stopped', 'recorded'"):
        clrjax.suggest(lrs, losses, non_finite="nan")


def test_result_suggest_spread_uses_each_lanes_record():
    lrs, nan_lane = _curve("nan_tail")
    inf_lane = _curve("inf_end")[1]
    curves = np.stack([nan_lane, inf_lane])
    result = clrjax.RangeTestResult(
        lrs=lrs,
        losses=curves,
        smoothed=curves,
        diverged_at=np.array([60, 70]),
        hparams={"seed": np.array([0, 1])},
        grid_names=("seed",),
    )
    [(config, spread)] = result.suggest_spread("minimum")
    expected = sorted(GOLDENS[n]["fastai"]["minimum"] for n in ("nan_tail", "inf_end"))
    assert config == {} and (spread.low, spread.high, spread.count) == (*expected, 2)
    with pytest.raises(TypeError, match="takes no non_finite"):
        result.suggest("minimum", non_finite="recorded")


def test_goldens_cover_the_cases():
    assert any(v is None for g in GOLDENS.values() for v in g["fastai"].values())
    assert GOLDENS["too_short"]["torch_lr_finder"]["steepest"] is None
    assert np.isnan(_curve("u_shape_diverged")[1]).any()
    assert {_kind(n) for n in GOLDENS} == {None, "stopped", "nan", "inf"}
    bug = GOLDENS["valley_edge_bug"]
    assert bug["fastai_valley_index"] == bug["fastai_num_points"] - 1
    for name in GOLDENS:
        assert len(_fastai_points(name)) == GOLDENS[name]["fastai_num_points"]


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_fixed_valley_is_one_point_after_fastai_except_the_wrap(name):
    fastai_index = GOLDENS[name]["fastai_valley_index"]
    expected_index = 0 if name == "valley_edge_bug" else fastai_index + 1
    assert _result(name).suggest("valley") == [_fastai_points(name)[expected_index]]


def test_valley_by_hand():
    # Longest decreasing run: 3 points ending at index 2.
    losses = np.array([3.0, 2.0, 1.0, 2.0, 3.0])
    assert _valley_index(losses, fastai_compat=False) == 1
    assert _valley_index(losses, fastai_compat=True) == 0
    # No run longer than one point: both pick the first point.
    flat_up = np.array([1.0, 2.0, 3.0])
    assert _valley_index(flat_up, fastai_compat=False) == 0
    assert _valley_index(flat_up, fastai_compat=True) == 0


def test_valley_edge_bug_by_hand():
    lrs = np.array([1e-3, 1e-2, 1e-1, 1.0])
    losses = np.array([2.0, 1.9, 2.1, 2.2])  # one step down, then only up
    kwargs = {"skip_start": 0, "skip_end": 0}
    assert clrjax.suggest(lrs, losses, "valley", fastai_compat=True, **kwargs) == 1.0  # wraps
    assert clrjax.suggest(lrs, losses, "valley", **kwargs) == 1e-3


def _valley_index_quadratic(losses):
    """The fixed valley rule written directly from its definition (O(n^2))."""
    n = losses.shape[0]
    run = [1] * n
    for i in range(n):
        for j in range(i):
            if losses[j] > losses[i]:
                run[i] = max(run[i], run[j] + 1)
    end = run.index(max(run))
    length = run[end]
    return end - length + 1 + length // 3 + length // 6


def test_valley_matches_its_definition_and_stays_inside():
    rng = np.random.default_rng(0)
    for _ in range(100):
        losses = rng.integers(0, 6, rng.integers(2, 40)).astype(float)  # many ties
        index = _valley_index(losses, fastai_compat=False)
        assert index == _valley_index_quadratic(losses)
        assert 0 <= index < losses.shape[0]


def test_steep_uses_log_lr_and_steepest_uses_index():
    # Linear lrs: the index gradient and the log-lr slope pick different points.
    lrs = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    losses = np.array([5.0, 3.5, 2.5, 1.5, 0.7])
    kwargs = {"skip_start": 0, "skip_end": 0}
    # slopes per log-lr: -1.5/ln2, -1/ln1.5, -1/ln(4/3), -0.8/ln(5/4) = -2.2, -2.5, -3.5, -3.6
    assert clrjax.suggest(lrs, losses, "steep", **kwargs) == 4.0
    # np.gradient: [-1.5, -1.25, -1, -0.9, -0.8] -> first
    assert clrjax.suggest(lrs, losses, "steepest", **kwargs) == 1.0


def test_minimum_is_a_tenth_of_the_argmin():
    lrs = np.geomspace(1e-4, 1.0, 5)
    losses = np.array([3.0, 2.0, 1.0, 1.5, 4.0])
    assert clrjax.suggest(lrs, losses, "minimum", skip_start=0, skip_end=0) == 1e-2 / 10


@pytest.mark.parametrize("method", clrjax.SUGGESTION_METHODS)
def test_rows_match_single_curves(method):
    lrs = _curve("u_shape")[0]
    names = [n for n in sorted(GOLDENS) if np.array_equal(GOLDENS[n]["lrs"], lrs) and not _kind(n)]
    curves = [_curve(n) for n in names]
    assert len(names) >= 5
    stacked = np.stack([c[1] for c in curves])
    rows = clrjax.suggest(lrs, stacked, method)
    assert isinstance(rows, np.ndarray)
    assert rows.shape == (len(names),) and rows.dtype == np.float64
    np.testing.assert_equal(rows, [clrjax.suggest(lrs, c[1], method) for c in curves])


@pytest.mark.parametrize("method", clrjax.SUGGESTION_METHODS)
@pytest.mark.parametrize("tail", [np.nan, np.inf])
def test_non_finite_tail_ends_the_curve(method, tail):
    lrs, losses = _curve("u_shape")
    cut = losses.copy()
    cut[70:] = tail
    cut[85] = 0.0  # a finite value after the end is ignored
    skip = {"skip_start": 10, "skip_end": 5}
    expected = clrjax.suggest(lrs[:70], losses[:70], method, **skip)
    assert clrjax.suggest(lrs, cut, method, **skip) == expected
    assert np.isfinite(expected)


def test_default_skip_start_counts_all_steps():
    # fastai trims num_it // 10 points, num_it being the planned steps (NaN tail included).
    lrs, losses = _curve("u_shape")
    cut = np.where(np.arange(100) < 60, losses, np.nan)
    assert clrjax.suggest(lrs, cut, "minimum") == clrjax.suggest(
        lrs[:60], losses[:60], "minimum", skip_start=10
    )


@pytest.mark.parametrize(
    ("method", "min_points"),
    [("valley", 2), ("steep", 2), ("minimum", 2), ("steepest", 2), ("slide", 16)],
)
def test_too_short_gives_nan(method, min_points):
    lrs = np.geomspace(1e-3, 1.0, 30)
    losses = (np.log10(lrs) + 1.5) ** 2
    skip = {"skip_start": 3, "skip_end": 4}
    short = np.where(np.arange(30) < 3 + min_points + 4, losses, np.nan)
    shorter = np.where(np.arange(30) < 3 + min_points + 3, losses, np.nan)
    assert np.isfinite(clrjax.suggest(lrs, short, method, **skip))
    assert np.isnan(clrjax.suggest(lrs, shorter, method, **skip))
    assert np.isnan(clrjax.suggest(lrs, np.full(30, np.nan), method, **skip))


def test_skip_end_zero_keeps_the_last_point():
    lrs = np.geomspace(1e-3, 1.0, 4)
    losses = np.array([4.0, 3.0, 2.0, 1.0])
    assert clrjax.suggest(lrs, losses, "minimum", skip_start=0, skip_end=0) == 0.1


def test_slide_options():
    lrs, losses = _curve("u_shape")
    base = clrjax.suggest(lrs, losses, "slide")
    assert clrjax.suggest(lrs, losses, "slide", adjust_value=0.5) == base * 0.5
    # A huge threshold stops at once: the window's first left end, lr_diff + 1 from the end.
    trimmed = lrs[10:95]
    assert clrjax.suggest(lrs, losses, "slide", thresh=1e9) == trimmed[-16]
    assert clrjax.suggest(lrs, losses, "slide", lr_diff=5, thresh=1e9) == trimmed[-6]
    # A zero threshold never stops on a curved loss: it slides to the first point.
    assert clrjax.suggest(lrs, losses, "slide", thresh=0.0) == trimmed[0]


def test_accepts_lists_and_jax_arrays():
    lrs, losses = _curve("u_shape")
    expected = clrjax.suggest(lrs, losses)
    assert clrjax.suggest(list(lrs), list(losses)) == expected
    as_f32 = clrjax.suggest(jnp.asarray(lrs, jnp.float32), jnp.asarray(losses, jnp.float32))
    assert as_f32 == expected  # the curves are float32 values already
    assert isinstance(expected, float)


def test_errors():
    lrs = np.geomspace(1e-3, 1.0, 20)
    losses = np.linspace(2.0, 1.0, 20)
    with pytest.raises(ValueError, match=r"method must be one of 'valley', 'steep'.*'steepest'"):
        clrjax.suggest(lrs, losses, "lowest")
    with pytest.raises(ValueError, match="losses must have shape"):
        clrjax.suggest(lrs, losses[:-1])
    with pytest.raises(ValueError, match="losses must have shape"):
        clrjax.suggest(lrs, losses.reshape(1, 1, 20))
    with pytest.raises(ValueError, match="lrs must be 1-D"):
        clrjax.suggest(lrs[None], losses)
    with pytest.raises(ValueError, match="lrs must be finite and > 0"):
        clrjax.suggest(lrs - 1e-3, losses)
    with pytest.raises(ValueError, match="lrs must be finite and > 0"):
        clrjax.suggest(np.where(np.arange(20) == 5, np.nan, lrs), losses)
    with pytest.raises(ValueError, match="lrs must be strictly increasing"):
        clrjax.suggest(lrs[::-1], losses)
    with pytest.raises(ValueError, match="lrs must be strictly increasing"):
        clrjax.suggest(np.repeat(lrs[:10], 2), losses)
    with pytest.raises(ValueError, match="skip_start must be an integer >= 0"):
        clrjax.suggest(lrs, losses, skip_start=-1)
    with pytest.raises(ValueError, match="skip_end must be an integer >= 0"):
        clrjax.suggest(lrs, losses, skip_end=1.5)
    with pytest.raises(TypeError, match="'steep' takes no option"):
        clrjax.suggest(lrs, losses, "steep", fastai_compat=True)
    with pytest.raises(ValueError, match="lr_diff must be an integer >= 1"):
        clrjax.suggest(lrs, losses, "slide", lr_diff=0)
    with pytest.raises(ValueError, match="thresh must be >= 0"):
        clrjax.suggest(lrs, losses, "slide", thresh=-1.0)
    with pytest.raises(ValueError, match="adjust_value must be > 0"):
        clrjax.suggest(lrs, losses[None].repeat(2, 0), "slide", adjust_value=0.0)
    with pytest.raises(TypeError, match="fastai_compat must be a bool"):
        clrjax.suggest(lrs, losses, "valley", fastai_compat="yes")
    # Options are checked even when no curve is long enough to use them.
    with pytest.raises(ValueError, match="lr_diff must be an integer >= 1"):
        clrjax.suggest(lrs, np.full(20, np.nan), "slide", lr_diff=-2)


def test_suggest_spread():
    lrs = np.geomspace(1e-4, 1.0, 9)
    lanes = np.stack([(np.log10(lrs) - m) ** 2 for m in (-3.0, -2.0, -1.0, -0.5)])
    lanes[3, 1:] = np.nan  # one lane diverged at once: no suggestion
    spread = clrjax.suggest_spread(lrs, lanes, "minimum", skip_start=0, skip_end=0)
    np.testing.assert_allclose(spread.median, 1e-3)
    assert (spread.low, spread.high, spread.count) == (1e-4, 1e-2, 3)
    even = clrjax.suggest_spread(lrs, lanes[:2], "minimum", skip_start=0, skip_end=0)
    np.testing.assert_allclose(even.median, np.sqrt(1e-4 * 1e-3))  # geometric middle
    one = clrjax.suggest_spread(lrs, lanes[0], "minimum", skip_start=0, skip_end=0)
    assert one.count == 1
    np.testing.assert_allclose(one.median, 1e-4)
    none = clrjax.suggest_spread(lrs, lanes[3:], "minimum", skip_start=0, skip_end=0)
    assert none.count == 0 and np.isnan([none.median, none.low, none.high]).all()
