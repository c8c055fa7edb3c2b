"""Tests for clrjax.ScheduleChoice's files: save/load round trips and inconsistent files."""

import dataclasses
import os
import tempfile

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clrjax
from clrjax._candidates import KINDS, Candidate
from clrjax._race import Rung


def range_test():
    losses = np.linspace(2.0, 1.0, 12, dtype=np.float32)[None].repeat(2, axis=0)
    return clrjax.RangeTestResult(
        lrs=np.geomspace(1e-4, 1.0, 12),
        losses=losses,
        smoothed=losses,
        diverged_at=np.array([-1, -1]),
        hparams={"seed": np.array([0, 1])},
        grid_names=("seed",),
        strategy="vmap/scan",
    )


RANGE_TEST = range_test()
NAMES = st.sampled_from(["weight_decay", "b2", "eps"])
VALUES = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@st.composite
def choices(draw):
    names = draw(st.lists(NAMES, max_size=2, unique=True))
    candidates = draw(
        st.lists(
            st.builds(
                Candidate,
                st.sampled_from(KINDS),
                st.floats(1e-6, 10.0),
                st.fixed_dictionaries({n: VALUES for n in names}),
                st.sampled_from(["", "valley", "minimum, steep"]),
            ),
            min_size=1,
            max_size=6,
        )
    )
    rungs = []
    for j in range(draw(st.integers(1, 3))):
        raced = draw(st.lists(st.integers(0, len(candidates) - 1), min_size=1, unique=True))
        seeds = draw(st.integers(1, 2))
        scores = draw(
            hnp.arrays(float, (len(raced), seeds), elements=st.floats(-5, 5) | st.just(np.nan))
        )
        trusted = j == 0 or draw(st.booleans())
        rungs.append(Rung(draw(st.integers(2, 99)), np.sort(raced), scores, 0.5, "vmap", trusted))
    best = draw(st.sampled_from(candidates))
    picks = st.dictionaries(
        st.sampled_from(["slide", "steepest"]), st.floats(1e-6, 10.0), min_size=1
    )
    return clrjax.ScheduleChoice(
        kind=best.kind,
        learning_rate=best.peak,
        hparams=best.hparams,
        total_steps=draw(st.integers(2, 10**6)),
        steps_per_epoch=float(draw(st.integers(1, 100))),
        decay_rate=0.97,
        momentum_name=draw(st.sampled_from([None, "momentum", "b1"])),
        base_momentum=draw(st.sampled_from([None, 0.9])),
        candidates=tuple(candidates),
        rungs=tuple(rungs),
        score="validation metric",
        range_test=RANGE_TEST,
        seconds=1.5,
        outside=draw(st.dictionaries(st.sampled_from(["", "weight_decay=0.1"]), picks)),
    )


def assert_same(a, b):
    for field in dataclasses.fields(a):
        if field.name not in ("rungs", "range_test", "factory", "base_momentum"):
            assert getattr(a, field.name) == getattr(b, field.name), field.name
    assert a.base_momentum == b.base_momentum or a.momentum_name is None
    for x, y in zip(a.rungs, b.rungs, strict=True):
        assert (x.num_steps, x.seconds, x.strategy, x.trusted) == (
            y.num_steps,
            y.seconds,
            y.strategy,
            y.trusted,
        )
        np.testing.assert_array_equal(x.candidates, y.candidates)
        np.testing.assert_array_equal(x.scores, y.scores)
    np.testing.assert_array_equal(a.range_test.losses, b.range_test.losses)
    assert a.unscored == b.unscored and repr(a) == repr(b)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(choices())
def test_save_load_round_trip(choice):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "choice.npz")
        choice.save(path)
        assert_same(choice, clrjax.ScheduleChoice.load(path))


def saved_arrays(choice, folder):
    path = os.path.join(folder, "choice.npz")
    choice.save(path)
    with np.load(path) as archive:
        return dict(archive)


def corrupted(value, how):
    if how == "cut" and value.ndim:
        return value[:-1]
    if how == "grow":
        return np.concatenate([np.atleast_1d(value)] * 2)
    if how == "index" and value.dtype.kind in "iu":
        return value + 99
    if how == "text":
        return np.array(["x|y"] * max(1, value.size)).reshape(value.shape)
    return value[None]


@settings(max_examples=80, deadline=None, derandomize=True)
@given(choices(), st.data())
def test_an_inconsistent_file_loads_or_is_refused_naming_it(choice, data):
    # Regression: zip() errors, "not enough values to unpack", or a silent load and an IndexError.
    with tempfile.TemporaryDirectory() as folder:
        arrays = saved_arrays(choice, folder)
        name = data.draw(st.sampled_from(sorted(arrays)))
        how = data.draw(st.sampled_from(["cut", "grow", "index", "text", "wrap"]))
        arrays[name] = corrupted(arrays[name], how)
        path = os.path.join(folder, "bad.npz")
        np.savez(path, **arrays)
        try:
            loaded = clrjax.ScheduleChoice.load(path)
        except ValueError as e:
            assert f"{path!r} is not a ScheduleChoice.save file" in str(e)
        else:  # what loads is whole: its winner and its table can be read
            assert loaded.candidates[loaded.winner] in loaded.candidates
            assert loaded.candidate_scores().shape == (len(loaded.candidates), len(loaded.rungs))
            repr(loaded)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("candidate_peaks", lambda v: v[:-1], r"candidate_peaks has shape \(1,\), not \(2,\)"),
        ("outside", lambda v: np.array(["no separators"]), "outside entry 'no separators'"),
        (
            "rung0/candidates",
            lambda v: np.array([0, 99]),
            r"rung0/candidates \[0, 99\] are not indices of the 2",
        ),
        ("rung0/scores", lambda v: v[:1], r"rung0/scores has shape \(1, 1\)"),
        ("hparam_values", lambda v: v[:0], r"hparam_values has shape \(0,\)"),
        (
            "candidate_kinds",
            lambda v: np.array(["decay", "cosine"]),
            "candidate kind 'cosine' is not one of",
        ),
        ("num_rungs", lambda v: np.array(0), "num_rungs is 0"),
        ("candidate_grid", lambda v: np.zeros((3, v.shape[1])), r"candidate_grid has shape \(3,"),
        ("rung0/trusted", lambda v: np.array(False), "no rung is trusted"),
    ],
)
def test_inconsistent_files_are_refused(tmp_path, name, value, match):
    choice = clrjax.ScheduleChoice(
        kind="decay",
        learning_rate=0.1,
        hparams={"weight_decay": 0.0},
        total_steps=90,
        steps_per_epoch=10.0,
        decay_rate=0.97,
        momentum_name="momentum",
        base_momentum=0.9,
        candidates=(
            Candidate("one_cycle", 0.1, {"weight_decay": 0.0}, "valley"),
            Candidate("decay", 0.1, {"weight_decay": 0.0}, "valley"),
        ),
        rungs=(Rung(10, np.array([0, 1]), np.array([[0.5], [0.7]]), 0.1, "vmap", True),),
        score="validation metric",
        range_test=RANGE_TEST,
        seconds=1.0,
        outside={"weight_decay=0": {"slide": 3.0}},
    )
    arrays = saved_arrays(choice, tmp_path)
    arrays[name] = value(arrays[name])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="is not a ScheduleChoice.save file: " + match) as info:
        clrjax.ScheduleChoice.load(tmp_path / "bad.npz")
    assert "bad.npz" in str(info.value)
