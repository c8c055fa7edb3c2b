"""Tests for clrjax.RangeTestResult (stage 3 of the range test)."""

import copy
import dataclasses
import os
import pickle
import types
from collections.abc import Mapping

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


def assert_same(r, other):
    """Every field equal, with the same dtypes."""
    for field in dataclasses.fields(r):
        a, b = getattr(r, field.name), getattr(other, field.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        elif isinstance(a, Mapping):
            assert list(a) == list(b)
            for k in a:
                assert a[k].dtype == b[k].dtype
                np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a == b


@pytest.mark.parametrize("with_val", [True, False])
@pytest.mark.parametrize("with_grid", [True, False])
def test_save_load_round_trip(tmp_path, with_val, with_grid):
    r = make_result(with_val, with_grid)
    path = tmp_path / "result.npz"
    r.save(path)
    loaded = clrjax.RangeTestResult.load(path)
    assert_same(r, loaded)
    assert loaded.grid_names == r.grid_names
    assert os.listdir(tmp_path) == ["result.npz"]  # no temporary file left


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "result.npz"
    first = make_result()
    first.save(path)

    def disk_full(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        make_result(with_val=False).save(path)
    monkeypatch.undo()
    assert_same(first, clrjax.RangeTestResult.load(path))
    assert os.listdir(tmp_path) == ["result.npz"]


@pytest.mark.parametrize("where", ["missing folder", "a folder"])
def test_a_failed_save_names_the_path_given_not_the_temporary_file(tmp_path, where):
    # Regression: the error named "<path>.<hex>.tmp", a file the user never asked for.
    path = tmp_path / "absent" / "result.npz" if where == "missing folder" else tmp_path
    with pytest.raises(OSError) as info:
        make_result().save(path)
    assert info.value.filename == str(path) and ".tmp" not in str(info.value)
    assert isinstance(info.value, FileNotFoundError if where == "missing folder" else OSError)
    assert os.listdir(tmp_path) == []  # nothing left behind


def test_save_refuses_object_arrays_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "result.npz"
    first = make_result()
    first.save(path)
    # Construction refuses object arrays; this one is forced in past the checks.
    forced = make_result()
    hparams = types.MappingProxyType({"opt": np.array(["sgd", None, 1, 2.0], dtype=object)})
    object.__setattr__(forced, "hparams", hparams)
    with pytest.raises(ValueError, match="allow_pickle"):
        forced.save(path)
    assert_same(first, clrjax.RangeTestResult.load(path))
    assert os.listdir(tmp_path) == ["result.npz"]


def test_save_through_a_symlink_writes_its_target(tmp_path):
    target = tmp_path / "target.npz"
    (tmp_path / "link.npz").symlink_to(target)
    make_result().save(tmp_path / "link.npz")
    assert (tmp_path / "link.npz").is_symlink()
    assert_same(make_result(), clrjax.RangeTestResult.load(target))


def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_load_says_what_is_wrong_with_a_file(tmp_path):
    good = tmp_path / "good.npz"
    make_result().save(good)
    entries = dict(np.load(good))
    cases = {
        "array.npy": ("an .npy array", lambda p: np.save(p, np.arange(3.0))),
        "notes.txt": ("not an .npz archive", lambda p: p.write_text("lr,loss\n0.1,2.0\n")),
        "empty.npz": ("a damaged or empty file", lambda p: p.write_bytes(b"")),
        "cut.npz": ("a damaged or empty file", lambda p: p.write_bytes(good.read_bytes()[:100])),
        "other.npz": ("entries \\['lrs', 'losses'", lambda p: _write_npz(p, x=np.zeros(2))),
        "pickled.npz": (
            "entry 'strategy' is damaged or holds pickled objects",
            lambda p: _write_npz(p, **{**entries, "strategy": np.array([None], dtype=object)}),
        ),
        "no_hparam.npz": (
            "entries \\['hparams/seed'\\] are missing",
            lambda p: _write_npz(p, **{k: v for k, v in entries.items() if k != "hparams/seed"}),
        ),
    }
    for name, (why, write) in cases.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(ValueError, match=f"is not a RangeTestResult.save file: {why}") as info:
            clrjax.RangeTestResult.load(path)
        assert "allow_pickle" not in str(info.value)
        error = info.value  # no numpy internals in the traceback
        assert error.__context__ is None or error.__suppress_context__
    with pytest.raises(FileNotFoundError):
        clrjax.RangeTestResult.load(tmp_path / "missing.npz")
    # A file whose entries do not make a result fails the constructor's checks.
    path = tmp_path / "strings.npz"
    _write_npz(path, **{**entries, "losses": np.full((4, 40), "x")})
    with pytest.raises(TypeError, match="losses must be an array of numbers"):
        clrjax.RangeTestResult.load(path)


@pytest.mark.parametrize(
    "copy_result", [copy.deepcopy, copy.copy, lambda r: pickle.loads(pickle.dumps(r))]
)
def test_copies_and_pickles_round_trip(copy_result):
    r = make_result()
    other = copy_result(r)
    assert_same(r, other)
    assert isinstance(other.hparams, types.MappingProxyType)
    with pytest.raises(ValueError, match="read-only"):
        other.losses[0, 0] = 1.0


def test_lane_labels_and_hparams():
    r = make_result()
    assert r.num_lanes == 4 and r.num_steps == 40
    assert r.lane_label(1) == "weight_decay=0.001, seed=1"
    assert r.lane_hparams(2) == {"weight_decay": 0.0, "seed": 0}
    assert isinstance(r.lane_hparams(2)["seed"], int)
    assert make_result(with_grid=False).lane_label(3) == "lane 3"
    for lane in (4, -1):  # -1 would label the last lane
        with pytest.raises(IndexError, match=f"lane index {lane} out of range for 4 lanes"):
            r.lane_label(lane)
    with pytest.raises(IndexError, match="lane index 7 out of range"):
        make_result(with_grid=False).lane_label(7)  # would be "lane 7"


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


def test_suggest_spread_groups_seeds_per_configuration():
    r = make_result()
    spreads = r.suggest_spread("minimum", skip_start=0, skip_end=0)
    assert [config for config, _ in spreads] == [{"weight_decay": 1e-3}, {"weight_decay": 0.0}]
    per_lane = r.suggest("minimum", skip_start=0, skip_end=0)
    for (_, spread), lanes in zip(spreads, ([0, 1], [2, 3]), strict=True):
        expected = clrjax.suggest_spread(
            r.lrs, r.smoothed[lanes], "minimum", skip_start=0, skip_end=0
        )
        assert spread == expected
        assert spread.count == 2
        assert spread.low == per_lane[lanes].min() and spread.high == per_lane[lanes].max()


def test_suggest_spread_without_seeds_is_one_group_per_lane():
    r = make_result(with_grid=False)
    spreads = r.suggest_spread("minimum", skip_start=0, skip_end=0)
    per_lane = r.suggest("minimum", skip_start=0, skip_end=0)
    assert [config for config, _ in spreads] == [{}] * r.num_lanes
    assert [spread.median for _, spread in spreads] == pytest.approx(list(per_lane))
    assert all(spread.count == 1 for _, spread in spreads)


def test_result_is_read_only_and_independent_of_inputs():
    losses = np.ones((1, 3))
    r = clrjax.RangeTestResult(
        lrs=np.array([0.1, 1.0, 10.0]),
        losses=losses,
        smoothed=losses,
        diverged_at=np.array([-1]),
        hparams={"weight_decay": np.array([0.0])},
        grid_names=("weight_decay",),
    )
    losses[0, 0] = 5.0  # the caller's array stays theirs
    assert r.losses[0, 0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        r.losses[0, 0] = 2.0
    with pytest.raises(TypeError):
        r.hparams["momentum"] = np.array([0.9])
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.lrs = np.zeros(3)


def test_arrays_cannot_be_made_writable():
    r = make_result()
    for array in (r.lrs, r.losses, r.smoothed, r.diverged_at, r.val_steps, r.val_losses):
        with pytest.raises(ValueError, match="WRITEABLE"):
            array.flags.writeable = True
    with pytest.raises(ValueError, match="WRITEABLE"):
        r.hparams["seed"].flags.writeable = True


def test_lane_label_keeps_integers_whole():
    r = make_result()
    big = dataclasses.replace(r, hparams={**r.hparams, "seed": np.array([0, 123456789, 2, 3])})
    assert big.lane_label(1) == "weight_decay=0.001, seed=123456789"


def test_accepts_what_the_range_test_produces():
    losses = np.array([[2.0, 1.5, np.inf, np.nan], [2.0, 1.0, 0.5, 0.4]], np.float32)
    r = clrjax.RangeTestResult(
        lrs=np.geomspace(1e-3, 1.0, 4),
        losses=losses,
        smoothed=losses,
        diverged_at=np.array([2, -1], np.int64),
        hparams={"weight_decay": np.array([0.0, 1e-4]), "seed": np.array([0, 1], np.int64)},
        grid_names=("weight_decay", "seed"),
        val_steps=np.array([1, 3], np.int64),
        val_losses=np.array([[1.0, np.nan], [1.0, 0.5]], np.float32),
        strategy="vmap/scan",
    )
    assert r.losses.dtype == np.float32 and r.diverged_at.dtype == np.int64
    assert r.hparams["seed"].dtype == np.int64


def _bad(**changes):
    """make_result's arguments with some changed."""
    r = make_result()
    fields = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
    fields["hparams"] = dict(r.hparams)
    return {**fields, **changes}


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"lrs": np.geomspace(1e-4, 1.0, 3)}, ValueError, r"losses must have shape \(\?, 3\)"),
        ({"lrs": np.ones((2, 20))}, ValueError, r"lrs must have shape \(\?,\)"),
        ({"lrs": np.array([])}, ValueError, "lrs must be a non-empty array of finite"),
        ({"lrs": np.full(40, np.nan)}, ValueError, "lrs must be a non-empty array of finite"),
        ({"lrs": ["a"] * 40}, TypeError, "lrs must be an array of numbers"),
        ({"losses": np.ones((1, 2))}, ValueError, r"losses must have shape \(\?, 40\)"),
        ({"losses": np.ones((0, 40))}, ValueError, "at least one lane"),
        ({"losses": np.full((4, 40), "1.0")}, TypeError, r"numbers, got dtype <U3 \(shape"),
        ({"losses": [[1.0, None]]}, TypeError, "losses must be an array of numbers"),
        ({"smoothed": np.ones((4, 39))}, ValueError, r"smoothed must have shape \(4, 40\)"),
        ({"diverged_at": np.array([-1.0, 19, -1, -1])}, TypeError, "diverged_at must be an array"),
        ({"diverged_at": np.array([-1, 19])}, ValueError, r"diverged_at must have shape \(4,\)"),
        ({"diverged_at": np.array([-1, 40, -1, -1])}, ValueError, r"in \[0, 40\)"),
        ({"diverged_at": np.array([-2, 1, -1, -1])}, ValueError, "diverged_at must be -1 or"),
        ({"hparams": [("seed", [0, 1, 0, 1])]}, TypeError, "hparams must be a mapping"),
        ({"hparams": {1: np.zeros(4)}, "grid_names": ()}, TypeError, "names must be strings"),
        ({"hparams": {"opt": np.array(list("abcd"))}, "grid_names": ()}, TypeError, "'opt'"),
        ({"hparams": {"wd": np.zeros(3)}, "grid_names": ()}, ValueError, r"\['wd'\] must have"),
        ({"grid_names": ("weight_decay", "momentum")}, ValueError, "grid_names must be distinct"),
        ({"grid_names": ("seed", "seed")}, ValueError, "grid_names must be distinct"),
        ({"grid_names": "seed"}, TypeError, "grid_names must be a sequence of strings"),
        ({"grid_names": ("seed", 1)}, TypeError, "grid_names must be a sequence of strings"),
        ({"val_losses": None}, ValueError, "val_steps and val_losses must be given together"),
        ({"val_steps": np.array([9, 19, 29, 40])}, ValueError, r"val_steps must be steps in"),
        ({"val_steps": np.array([9.0, 19, 29, 39])}, TypeError, "val_steps must be an array"),
        ({"val_losses": np.ones((4, 3))}, ValueError, r"val_losses must have shape \(4, 4\)"),
        ({"strategy": None}, TypeError, "strategy must be a string"),
    ],
)
def test_construction_checks_the_fields(changes, error, match):
    with pytest.raises(error, match=match):
        clrjax.RangeTestResult(**_bad(**changes))


def test_grid_names_may_be_any_iterable_of_names():
    r = clrjax.RangeTestResult(**_bad(grid_names=(n for n in ("weight_decay", "seed"))))
    assert r.grid_names == ("weight_decay", "seed")
