"""Tests for find_schedule and find_schedule_step fed a stream of batches (a list, a loader)."""

import jax
import numpy as np
import optax
import pytest
from test_find_schedule import PARAMS, SEARCH, TRAIN, VAL, accuracy, init_fn, loss_fn

import clrjax
from clrjax import _training

BATCHES = [(TRAIN[0][i : i + 32], TRAIN[1][i : i + 32]) for i in range(0, 256, 32)]
VAL_BATCHES = [(VAL[0][i : i + 64], VAL[1][i : i + 64]) for i in range(0, 128, 64)]
QUICK = dict(total_steps=18, search=clrjax.Search(range_test_steps=10, start_lr=1e-4))


class Loader:
    """A DataLoader-like re-iterable: every ``__iter__`` starts a pass over ``num_batches``."""

    def __init__(self, num_batches):
        self.num_batches = num_batches
        self.passes = []  # batches read in each pass

    def __iter__(self):
        self.passes.append(0)
        for i in range(self.num_batches):
            self.passes[-1] += 1
            yield BATCHES[i % len(BATCHES)]


class SizedLoader(Loader):
    def __len__(self):
        return self.num_batches


@pytest.fixture
def no_engine(monkeypatch):
    def nothing_may_run(*args, **kwargs):
        raise AssertionError("the engine ran")

    monkeypatch.setattr(clrjax._engine, "run", nothing_may_run)


def test_a_list_of_batches_is_raced_with_an_epoch_of_its_length():
    choice = clrjax.find_schedule(
        loss_fn,
        None,
        BATCHES,
        val_data=VAL_BATCHES,  # a stream of validation batches works as before
        val_metric=accuracy,
        total_steps=72,
        model=clrjax.Model(init_fn=init_fn),
        search=SEARCH,
    )
    assert choice.steps_per_epoch == len(BATCHES)  # the stream's batches, not 256 // 128
    assert [r.num_steps for r in choice.rungs] == [8, 24, 72]
    assert choice.range_test.num_lanes == 5  # the range test's seeds (shuffle="per_seed")
    assert choice.rungs[-1].mean_scores.max() > 0.8


def test_every_stage_reads_the_loader_from_its_start_and_every_lane_the_same_batches():
    loader = SizedLoader(100)  # more batches than any stage reads: one pass per stage
    choice = clrjax.find_schedule(
        loss_fn,
        PARAMS,  # no init_fn, no takes_rng: a run's seed changes nothing with a stream
        loader,
        val_data=VAL,
        val_metric=accuracy,
        total_steps=36,
        # No race past a bracket edge: one pass per rung (an extension is one more pass).
        search=clrjax.Search(
            range_test_steps=10, start_lr=1e-4, steps_per_epoch=8, max_extensions=0
        ),
    )
    assert [r.num_steps for r in choice.rungs] == [4, 12, 36]
    # A pass reads the first batches (their shapes), then one each for the range test and rungs.
    assert len(loader.passes) == 2 + len(choice.rungs)
    assert loader.passes == [2, 10, 4, 12, 36]  # the first two batches, then every stage its steps
    # Every lane of a stage steps on the same batches: the range test's seeds trace one curve,
    # the last rung's seeds score alike (with arrays each seed has its own data order).
    np.testing.assert_array_equal(
        choice.range_test.losses, choice.range_test.losses[:1].repeat(5, 0)
    )
    scores = choice.rungs[-1].scores
    np.testing.assert_array_equal(scores[:, 0], scores[:, 1])


@pytest.mark.filterwarnings("ignore:find_schedule. the winner")  # a tiny race: edges are fine
def test_one_full_batch_in_a_list_chooses_as_the_arrays_do():
    kw = dict(val_data=VAL, val_metric=accuracy, model=clrjax.Model(init_fn=init_fn), **QUICK)
    # Full batches: shuffling the arrays reorders the examples inside the one batch only.
    arrays = clrjax.find_schedule(loss_fn, None, TRAIN, batch_size=256, **kw)
    stream = clrjax.find_schedule(loss_fn, None, [TRAIN], **kw)
    assert stream.steps_per_epoch == arrays.steps_per_epoch == 1
    np.testing.assert_allclose(stream.range_test.losses, arrays.range_test.losses, rtol=1e-4)
    assert [c.label() for c in stream.candidates] == [c.label() for c in arrays.candidates]
    for ours, theirs in zip(stream.rungs, arrays.rungs, strict=True):
        np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-6)
    assert (stream.kind, stream.learning_rate) == (arrays.kind, arrays.learning_rate)


@pytest.mark.parametrize("one_pass", [lambda: (b for b in BATCHES), lambda: iter(BATCHES)])
def test_a_one_pass_iterator_is_refused_before_anything_runs(no_engine, one_pass):
    data = one_pass()
    with pytest.raises(TypeError, match=r"one-pass .* pass a re-iterable: a list of batches"):
        clrjax.find_schedule(loss_fn, PARAMS, data, val_data=VAL, **QUICK)
    assert next(data) is BATCHES[0]  # nothing was read


def test_an_unsized_stream_needs_steps_per_epoch(no_engine):
    loader = Loader(8)
    with pytest.raises(TypeError, match=r"no len\(\).* Search\(steps_per_epoch=\.\.\.\)"):
        clrjax.find_schedule(loss_fn, PARAMS, loader, val_data=VAL, **QUICK)
    assert loader.passes == []  # refused before a batch was read
    sized = SizedLoader(8)
    with pytest.raises(AssertionError, match="the engine ran"):  # accepted: it reached the engine
        clrjax.find_schedule(loss_fn, PARAMS, sized, val_data=VAL, **QUICK)


def test_the_race_counts_a_chunk_of_the_streams_batches_not_index_arrays(no_engine, monkeypatch):
    # Before the range test, the last rung is checked: 18 steps of 4 lanes' schedules and losses,
    # 18 * (16 + 4 * 42) bytes, no batch indices; a chunk is an epoch (8 steps), its batches of
    # 32 x (8 float32 + 1 int32) held twice.
    need = 18 * (16 + 4 * 42) + 2 * 8 * (32 * 9 * 4)
    budget = iter([need, need - 1, need - 1])
    monkeypatch.setattr(_training, "host_memory_budget", lambda: next(budget))
    with pytest.raises(AssertionError, match="the engine ran"):  # it fits: the range test runs
        clrjax.find_schedule(loss_fn, PARAMS, BATCHES, val_data=VAL, **QUICK)
    with pytest.raises(MemoryError, match=r"a chunk of the stream's .* Execution\.chunk_size"):
        clrjax.find_schedule(loss_fn, PARAMS, BATCHES, val_data=VAL, **QUICK)
    seven = clrjax.Execution(chunk_size=7)  # 7 batches a chunk fit
    with pytest.raises(AssertionError, match="the engine ran"):
        clrjax.find_schedule(loss_fn, PARAMS, BATCHES, val_data=VAL, execution=seven, **QUICK)


def test_find_schedule_step_races_a_stream():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)

    def train_step(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss

    def val_step(state, batch):
        return {
            "loss": loss_fn(state["params"], batch),
            "accuracy": accuracy(state["params"], batch),
        }

    loader = SizedLoader(len(BATCHES))
    choice = clrjax.find_schedule_step(
        train_step,
        {"params": PARAMS, "opt": tx.init(PARAMS)},
        loader,
        val_data=VAL,
        val_step=val_step,
        metric_key="accuracy",
        **QUICK,
    )
    assert choice.steps_per_epoch == len(BATCHES)
    assert [r.num_steps for r in choice.rungs] == [2, 6, 18]
    assert len(loader.passes) >= 2 + len(choice.rungs)
    assert np.nanmax(choice.candidate_scores()) > 0.5
