"""Tests for clrjax.RangeTestResult (stage 3 of the range test)."""

import dataclasses

import numpy as np
import pytest

import clrjax


def make_result(with_val=True, with_grid=True):
    lanes, steps = 4, 40
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.5, 2.0, (lanes, steps)).astype(np.float32)
    losses[1, 20:] = np.nan
    hparams = {}
    names = ()
    if with_grid:
        hparams = {
            "weight_decay": np.array([1e-3, 1e-3, 0.0, 0.0]),
            "seed": np.array([0, 1, 0, 1]),
        }
        names = ("weight_decay", "seed")
    return clrjax.RangeTestResult(
        lrs=np.geomspace(1e-4, 1.0, steps),
        losses=losses,
        smoothed=losses * 0.5,
        diverged_at=np.array([-1, 19, -1, -1]),
        hparams=hparams,
        grid_names=names,
        val_steps=np.array([9, 19, 29, 39]) if with_val else None,
        val_losses=losses[:, [9, 19, 29, 39]] if with_val else None,
        strategy="vmap/chunks",
    )


@pytest.mark.parametrize("with_val", [True, False])
@pytest.mark.parametrize("with_grid", [True, False])
def test_save_load_round_trip(tmp_path, with_val, with_grid):
    r = make_result(with_val, with_grid)
    path = tmp_path / "result.npz"
    r.save(path)
    loaded = clrjax.RangeTestResult.load(path)
    for field in dataclasses.fields(r):
        a, b = getattr(r, field.name), getattr(loaded, field.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        elif isinstance(a, dict):
            assert list(a) == list(b)
            for k in a:
                assert a[k].dtype == b[k].dtype
                np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a == b
    assert loaded.grid_names == r.grid_names


def test_lane_labels_and_hparams():
    r = make_result()
    assert r.num_lanes == 4 and r.num_steps == 40
    assert r.lane_label(1) == "weight_decay=0.001, seed=1"
    assert r.lane_hparams(2) == {"weight_decay": 0.0, "seed": 0}
    assert isinstance(r.lane_hparams(2)["seed"], int)
    assert make_result(with_grid=False).lane_label(3) == "lane 3"
    with pytest.raises(IndexError):
        r.lane_label(4)


def test_repr_is_a_summary():
    assert repr(make_result()) == (
        "RangeTestResult(4 lanes x 40 steps, lr 0.0001..1, grid=('weight_decay', 'seed'), "
        "diverged=1/4, strategy='vmap/chunks')"
    )


def test_frozen():
    r = make_result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.lrs = np.zeros(3)


def test_best_raises_without_finite_losses():
    r = make_result()
    empty = dataclasses.replace(r, smoothed=np.full_like(r.smoothed, np.nan))
    with pytest.raises(ValueError, match="finite"):
        empty.best()


def test_suggest_and_best_delegate_to_suggest():
    # Needs clrjax._suggest (the suggest branch).
    from clrjax._suggest import suggest

    r = make_result()
    for method in ("valley", "steepest", "minimum"):
        expected = np.asarray(suggest(r.lrs, r.smoothed, method=method))
        np.testing.assert_array_equal(r.suggest(method), expected)
    raw = np.asarray(suggest(r.lrs, r.losses, method="minimum"))
    np.testing.assert_array_equal(r.suggest("minimum", smoothed=False), raw)
    best = r.best("minimum")
    minima = np.nanmin(r.smoothed, axis=1)
    assert best.index == int(np.argmin(minima))
    assert best.hparams == r.lane_hparams(best.index)
    assert best.lr == r.suggest("minimum")[best.index]
