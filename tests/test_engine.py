"""Tests for the lane engine: placements, drivers, the strategy rules, feeding, interrupts."""

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _flat_options import fold

import clrjax
from clrjax import _engine
from clrjax._engine import feeding, program, runner, strategy
from clrjax._engine.placement import Placement
from clrjax._loss_task import LossTask

N = 96
X = np.asarray(jax.random.normal(jax.random.key(0), (N, 4, 4, 1)))
Y = np.asarray(jax.random.randint(jax.random.key(1), (N,), 0, 3))
GRID = {"weight_decay": [0.0, 1e-3, 1e-2], "momentum": [0.5, 0.9]}  # 6 lanes
FAST = dict(batch_size=16, num_steps=20, start_lr=1e-3, end_lr=100.0, diverge_threshold=1.5)


def init_mlp(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (16, 8)) * 0.5,
        "b1": jnp.zeros(8),
        "w2": jax.random.normal(k2, (8, 3)) * 0.5,
    }


def mlp_loss(params, batch):
    x, y = batch
    h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
    logits = h @ params["w2"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def cnn_loss(params, batch):
    x, y = batch
    h = jax.lax.conv_general_dilated(
        x, params["conv"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    logits = jnp.tanh(h).mean(axis=(1, 2)) @ params["head"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


MLP_PARAMS = init_mlp(jax.random.key(2))
CNN_PARAMS = {
    "conv": jax.random.normal(jax.random.key(3), (3, 3, 1, 4)) * 0.3,
    "head": jax.random.normal(jax.random.key(4), (4, 3)) * 0.3,
}


def run(loss_fn=mlp_loss, params=None, **kw):
    params = MLP_PARAMS if params is None else params
    kw = fold(clrjax.range_test, {"grid": GRID, **FAST, **kw})  # option fields given flat
    return clrjax.range_test(loss_fn, params, (X, Y), **kw)


@pytest.fixture(scope="module")
def reference():
    return run(strategy="vmap", driver="scan")


def assert_same_run(result, reference):
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-4, equal_nan=True)
    np.testing.assert_allclose(result.smoothed, reference.smoothed, rtol=1e-4, equal_nan=True)
    np.testing.assert_array_equal(result.diverged_at, reference.diverged_at)


def test_reference_run_diverges_in_some_lanes(reference):
    # The comparisons below cover diverged lanes too: some lanes diverge, not all at once.
    assert reference.strategy == "vmap/scan"
    assert len(set(reference.diverged_at.tolist())) > 1


# ------------------------------------------------------------------ placements, drivers


@pytest.mark.parametrize(
    ("strategy_name", "group", "driver", "label"),
    [
        ("map", 4, "chunks", "map[4]/chunks"),  # 6 lanes: a group of 4 and a remainder of 2
        ("map", None, "python", "map/python"),  # one lane at a time
        ("serial", None, "chunks", "serial+threads[2]/chunks"),  # one lane per call, two at once
        (
            "serial",
            4,
            "scan",
            "serial[4]+threads[2]/scan",
        ),  # groups of 4 (vmapped), padded to 8 lanes
        ("serial", None, "python", "serial+threads[2]/python"),  # one call per lane and step
        ("vmap", None, "chunks", "vmap/chunks"),
        ("vmap", None, "python", "vmap/python"),
    ],
)
def test_placements_and_drivers_match_vmap_scan(reference, strategy_name, group, driver, label):
    r = run(strategy=strategy_name, lane_group_size=group, driver=driver, chunk_size=5)
    assert r.strategy == label
    assert_same_run(r, reference)


def poisoned_sgd(learning_rate, poison):
    """SGD whose updates are NaN in lanes with ``poison > 0``."""
    nan_or_one = jnp.where(poison > 0, jnp.nan, 1.0)
    return optax.chain(clrjax.pytorch_sgd(learning_rate), optax.scale(nan_or_one))


@pytest.mark.parametrize("placement", ["vmap", "serial", "map"])
def test_a_nan_lane_never_reaches_the_others(placement):
    # Lane 1's params turn NaN after its first update and are never frozen: the
    # other lanes must train exactly as they do without it.
    kw = dict(optimizer=poisoned_sgd, diverge_threshold=None, diverge_rebound=None, end_lr=1.0)
    kw["strategy"] = placement
    r = run(grid={"poison": [0.0, 1.0, 0.0]}, lane_group_size=2, **kw)
    alone = run(grid={"poison": [0.0]}, **kw)
    assert r.diverged_at.tolist() == [-1, 1, -1]
    assert np.all(np.isnan(r.losses[1, 2:])) and np.all(np.isfinite(r.losses[[0, 2]]))
    for i in (0, 2):
        np.testing.assert_allclose(r.losses[i], alone.losses[0], rtol=1e-5)


def lowered(driver, loss_fn=cnn_loss, params=CNN_PARAMS, lanes=2):
    """The lowered program of ``lanes`` vmapped lanes of ``loss_fn``, one chunk of steps."""
    spec = program.ProgramSpec(
        task=LossTask(loss_fn, clrjax.pytorch_sgd, loss_fn),
        smoothing="debiased_ema",
        evaluates=False,
        seeded=False,
        placement=Placement("vmap"),
        driver=driver,
    )
    prog = program.get_program(spec)
    hp = {"learning_rate": np.full(lanes, 0.1, np.float32)}
    carry, keys = prog.init(
        (params, None), jax.random.key(0), np.zeros(lanes, np.uint32), {}, {}, hp
    )
    length = 1 if driver == "python" else 3
    shared = _engine.lane_step.Shared(
        data=(X, Y), val=None, tracking=_engine.Tracking(*np.float32([0.9, 4.0, np.inf, 0.0, 1.0]))
    )
    xs = _engine.lane_step.StepX(
        step=np.arange(length, dtype=np.int32),
        active=np.ones(length, bool),
        evaluate=np.zeros(length, bool),
        hparams={},
        batch=np.zeros((length, 1, 16), np.int32),
    )
    lane_xs = _engine.lane_step.LaneX({"learning_rate": np.full((length, lanes), 0.1, np.float32)})
    consts = _engine.lane_step.LaneConsts({}, keys, np.zeros(lanes, np.int32))
    return prog.run.lower(carry, consts, shared, xs, lane_xs)


def test_serial_calls_a_one_lane_program_per_lane(monkeypatch):
    # The lane loop lives in Python: the program is the unbatched step of one lane
    # (what a loop of single runs compiles), called once per lane and chunk.
    calls = []
    drive = runner.drive

    def spy(prog, groups, *args, **kw):
        calls.append([(g.lanes, g.carry.tracker.alive.shape) for g in groups])
        return drive(prog, groups, *args, **kw)

    monkeypatch.setattr(runner, "drive", spy)
    run(strategy="serial", driver="scan")
    run(strategy="serial", lane_group_size=4, driver="scan")  # 6 lanes: 2 groups of 4
    assert calls[0] == [(slice(i, i + 1), (1,)) for i in range(6)]
    assert calls[1] == [(slice(0, 4), (4,)), (slice(4, 8), (4,))]


def test_serial_groups_step_on_host_threads_at_once(monkeypatch):
    # Two calls of the program must be under way together: each waits at a
    # barrier for the other (one call at a time would break it after 20 s).
    barrier = threading.Barrier(2, timeout=20)
    threads = set()
    drive = runner.drive

    def spy(prog, groups, *args, **kw):
        def run_both(*run_args):
            threads.add(threading.get_ident())
            barrier.wait()
            return prog.run(*run_args)

        return drive(prog._replace(run=run_both), groups, *args, **kw)

    reference = run(strategy="vmap", driver="scan")
    monkeypatch.setattr(runner, "drive", spy)
    r = run(strategy="serial", driver="chunks", chunk_size=5)  # 6 lanes x 4 chunks: 24 calls
    assert r.strategy == "serial+threads[2]/chunks" and len(threads) == 2
    np.testing.assert_allclose(r.losses, reference.losses, rtol=1e-5, equal_nan=True)


def test_interrupt_with_threads_keeps_the_completed_chunks(monkeypatch):
    calls = []
    lock = threading.Lock()
    # The first two calls wait for each other: they can only both return when two
    # host threads step groups at once, whatever the OS scheduler does (on one
    # thread the barrier times out and the run fails).
    both_started = threading.Barrier(2, timeout=60)
    drive = runner.drive

    def spy(prog, groups, *args, **kw):
        def run_then_interrupt(*run_args):
            with lock:
                calls.append(threading.get_ident())
                n = len(calls)
            if n <= 2:
                both_started.wait()
            if n == 2 * 6 + 1:  # the first call of the third chunk
                raise KeyboardInterrupt
            return prog.run(*run_args)

        return drive(prog._replace(run=run_then_interrupt), groups, *args, **kw)

    monkeypatch.setattr(runner, "drive", spy)
    kw = dict(strategy="serial", driver="chunks", chunk_size=5, diverge_threshold=None, end_lr=1.0)
    with pytest.raises(clrjax.RangeTestInterrupted) as info:
        run(**kw)
    partial = info.value.result
    assert len(set(calls)) == 2
    assert np.all(np.isfinite(partial.losses[:, :10])) and np.all(np.isnan(partial.losses[:, 10:]))


@pytest.mark.parametrize("lanes", [1, 2])
def test_a_single_lane_loops_without_its_lane_axis(lanes):
    # One lane's axis is dropped outside the step loop: a loop carrying (1, ...) arrays
    # ran the step ~40% slower on XLA:CPU (on two threads instead of one).
    hlo = lowered("chunks", mlp_loss, MLP_PARAMS, lanes=lanes).as_text()
    loop = next(line for line in hlo.splitlines() if "stablehlo.while" in line)
    carried = set(re.findall(r"tensor<([\dx]+)xf32>", loop.split(" : ")[1]))
    lane = "" if lanes == 1 else f"{lanes}x"
    assert {f"{lane}16x8", f"{lane}8x3"} <= carried
    assert lanes > 1 or not any(shape.startswith("1x") for shape in carried)


def test_cpu_compiler_options_only_where_xla_knows_them(monkeypatch):
    assert program.compiler_options("cpu") == program.CPU_COMPILER_OPTIONS
    assert program.compiler_options("gpu") is None
    program.compiler_options.cache_clear()
    monkeypatch.setattr(program, "CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option": False})
    try:
        assert program.compiler_options("cpu") is None
    finally:
        program.compiler_options.cache_clear()


@pytest.mark.parametrize(("driver", "loops"), [("chunks", True), ("python", False)])
def test_the_python_driver_has_no_loops_or_conditionals(driver, loops):
    hlo = lowered(driver).as_text()
    assert ("while" in hlo or "stablehlo.case" in hlo) == loops


def test_caller_params_are_not_donated():
    params = jax.tree.map(jnp.array, MLP_PARAMS)
    for driver in ("scan", "chunks", "python"):
        for placement in ("vmap", "serial"):
            run(params=params, strategy=placement, driver=driver, grid={"momentum": [0.9]})
            run(params=params, strategy=placement, driver=driver)
            for leaf in jax.tree.leaves(params):
                assert not leaf.is_deleted()
    np.testing.assert_array_equal(params["w1"], MLP_PARAMS["w1"])


# ------------------------------------------------------------------ strategy rules


def footprint(state_mib=0.0, flops=0.0, convolutions=False, step_bytes=1 << 10):
    return strategy.Footprint(int(state_mib * 2**20), step_bytes, 0, flops, convolutions)


@pytest.mark.parametrize(
    ("fp", "lanes", "expected"),
    [
        (footprint(), 16, "vmap"),  # small steps batch well
        (footprint(state_mib=2), 16, "serial"),  # 32 MiB of lane state: beyond the caches
        (footprint(state_mib=0.5), 16, "vmap"),
        (footprint(flops=1e7), 16, "serial"),  # large steps: separate matmuls run at full rate
        (footprint(flops=1e7), 1, "vmap"),  # nothing to lay out
    ],
)
def test_cpu_placement_rules(fp, lanes, expected):
    kw = dict(lanes_per_device=lanes, budget=np.inf, on_cpu=True, driver="scan")
    assert strategy.choose_placement("auto", None, fp, **kw).kind == expected


def test_cpu_convolutions_never_get_a_lane_loop():
    fp = footprint(state_mib=4, flops=1e9, convolutions=True)
    driver = strategy.choose_driver("auto", fp, on_cpu=True, wants_chunks=False, call_work=0.0)
    assert driver == "python"
    kw = dict(lanes_per_device=16, budget=np.inf, on_cpu=True, driver=driver)
    assert strategy.choose_placement("auto", None, fp, **kw).kind == "vmap"


@pytest.mark.parametrize(("convolutions", "expected"), [(True, "serial"), (False, "vmap")])
def test_accelerator_placement_rules(convolutions, expected):
    # vmapped convolutions become grouped ones: accelerators loop over lanes instead.
    fp = footprint(state_mib=64, flops=1e10, convolutions=convolutions)
    driver = strategy.choose_driver("auto", fp, on_cpu=False, wants_chunks=False, call_work=0.0)
    assert driver == "scan"
    kw = dict(lanes_per_device=64, budget=np.inf, on_cpu=False, driver=driver)
    assert strategy.choose_placement("auto", None, fp, **kw).kind == expected


def test_driver_rules():
    fp = footprint(flops=1e6)
    choose = lambda **kw: strategy.choose_driver("auto", fp, on_cpu=True, **kw)
    assert choose(wants_chunks=False, call_work=1e6) == "scan"
    assert choose(wants_chunks=True, call_work=1e6) == "chunks"
    long_call = 2 * strategy.SCAN_MAX_SECONDS * strategy.CPU_FLOPS_PER_SECOND
    assert choose(wants_chunks=False, call_work=long_call) == "chunks"
    python = strategy.choose_driver("python", fp, on_cpu=True, wants_chunks=True, call_work=0)
    assert python == "python"


def test_scan_unless_one_call_would_be_long(monkeypatch):
    # Ctrl-C is answered between calls, so what counts is one call's work: a
    # serial group's run, or every lane's ("timed" may pick vmap).
    monkeypatch.setattr(runner, "_FOOTPRINTS", {})
    assert run().strategy == "serial[3]+threads[2]/scan"
    (fp,) = runner._FOOTPRINTS.values()
    lanes_in_a_second = 4.5  # a call of 3 lanes takes ~0.7 s, of all 6 ~1.3 s
    rate = fp.flops * FAST["num_steps"] * lanes_in_a_second / strategy.SCAN_MAX_SECONDS
    monkeypatch.setattr(strategy, "CPU_FLOPS_PER_SECOND", rate)
    assert run().strategy == "serial[3]+threads[2]/scan"
    assert run(strategy="serial").strategy == "serial+threads[2]/scan"
    assert run(strategy="serial", lane_group_size=6).strategy == "serial[6]/chunks"
    assert run(strategy="vmap").strategy == "vmap/chunks"
    assert run(strategy="timed").strategy.endswith("/chunks")


def test_cpu_cores_split_vmapped_lanes_into_one_group_per_thread():
    place = lambda lanes, driver="scan", threads=2: strategy.choose_placement(
        "auto", None, footprint(), lanes_per_device=lanes, budget=np.inf, on_cpu=True,
        driver=driver, threads=threads,
    )  # fmt: skip
    assert place(16) == Placement("serial", 8)
    assert place(16, threads=4) == Placement("serial", 4)
    assert place(3) == Placement("serial", 2)  # padded to 4 lanes
    assert place(2, threads=4) == Placement("serial", 1)
    assert place(1) == place(16, threads=1) == place(16, "python") == Placement("vmap")


def test_thread_rules():
    fp = footprint(state_mib=1, step_bytes=10 << 20)
    kw = dict(lanes_per_device=6, budget=np.inf, available=4)
    assert strategy.choose_threads(Placement("serial"), fp, **kw) == 4
    assert strategy.choose_threads(Placement("serial", 4), fp, **kw) == 2  # 2 groups of 4
    assert strategy.choose_threads(Placement("serial"), None, **{**kw, "available": 1}) == 1
    for other in (Placement("vmap"), Placement("map", 3)):
        assert strategy.choose_threads(other, fp, **kw) == 1
    # Within the memory budget: two one-lane steps at a time fit, three do not.
    budget = fp.total(6, 2)
    assert strategy.choose_threads(Placement("serial"), fp, **{**kw, "budget": budget}) == 2
    assert strategy.choose_threads(Placement("serial"), fp, **{**kw, "budget": 0}) == 1


def test_memory_budget_groups_lanes_or_refuses():
    fp = footprint(state_mib=1, step_bytes=10 << 20)
    kw = dict(lanes_per_device=6, on_cpu=False, driver="scan")
    assert strategy.choose_placement("auto", None, fp, budget=np.inf, **kw) == Placement("vmap")
    budget = fp.total(6, 3)
    assert strategy.choose_placement("auto", None, fp, budget=budget, **kw) == Placement("map", 3)
    with pytest.raises(MemoryError, match="max_memory"):
        strategy.choose_placement("auto", None, fp, budget=fp.total(6, 1) - 1, **kw)


def test_footprint_of_a_known_step():
    params = {"w": jnp.zeros((16, 8)), "v": jnp.zeros((8, 3))}

    def loss(p, batch):
        x, y = batch
        logits = jnp.tanh(x.reshape(16, -1) @ p["w"]) @ p["v"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    task = LossTask(loss, clrjax.pytorch_sgd, loss)
    spec = program.ProgramSpec(task, "debiased_ema", False, False, Placement(), "python")
    source = feeding.BatchSource(data=(X, Y), orders=np.zeros((1, 4, 16), np.int32))
    plan = feeding.StepPlan(
        4, {"learning_rate": np.full(4, 0.1, np.float32)}, {}, np.zeros(4, bool), source
    )
    hp = {"momentum": np.full(2, 0.9, np.float32)}
    x0, lane_x0 = plan.first()
    init_args = (
        (params, None),
        jax.random.key(0),
        np.zeros(2, np.uint32),
        hp,
        x0.hparams,
        lane_x0.hparams,
    )
    shared = _engine.lane_step.Shared((X, Y), None, _engine.Tracking(0.9, 4.0, np.inf, 0.0, 1))
    fp = runner._trace_footprint(spec, init_args, shared, plan, np.zeros(2, np.int32))
    # params and the momentum trace (2 x 152 floats) plus the tracker's 5 scalars
    assert fp.state_bytes == 2 * 152 * 4 + 4 * 4 + 1
    assert fp.shared_bytes == X.nbytes + Y.nbytes
    # the estimate bounds what the compiled program of 6 lanes really needs
    compiled = lowered("python", loss, params, lanes=6).compile().memory_analysis()
    assert compiled is not None and compiled.temp_size_in_bytes > 0
    assert compiled.temp_size_in_bytes <= fp.step_bytes * 6
    # forward 16x16x8 + 16x8x3 multiply-adds; backward: the weight gradients of both
    # layers and the hidden layer's input gradient (the data needs none); 2 FLOPs each
    assert fp.flops == 2 * (2 * 16 * 16 * 8 + 3 * 16 * 8 * 3)
    assert not fp.convolutions


# ------------------------------------------------------------------ through range_test


def test_auto_on_cpu_drives_convolutions_without_loops():
    r = run(loss_fn=cnn_loss, params=CNN_PARAMS)
    assert r.strategy == "vmap/python"
    reference = run(loss_fn=cnn_loss, params=CNN_PARAMS, strategy="vmap", driver="scan")
    assert_same_run(r, reference)


def test_a_small_max_memory_groups_the_lanes_and_a_tiny_one_is_refused(reference):
    with pytest.raises(MemoryError, match="max_memory"):
        run(max_memory=1)
    plenty = run(max_memory=1e12)
    assert plenty.strategy == "serial[3]+threads[2]/scan"  # all 6 lanes at once
    for budget in np.geomspace(1e4, 1e8, 9):  # somewhere the lanes stop fitting together
        try:
            r = run(max_memory=float(budget))
        except MemoryError:
            continue
        if r.strategy.startswith("map["):
            assert_same_run(r, reference)
            break
    else:
        pytest.fail("no budget grouped the lanes")


def test_timed_strategy_keeps_the_faster_and_caches_it(reference):
    runner._TIMED.clear()
    r = run(strategy="timed", driver="chunks", chunk_size=5)
    labels = ("serial[3]+threads[2]/chunks", "vmap/chunks", "serial+threads[2]/chunks")
    assert r.strategy in labels and len(runner._TIMED) == 1
    assert_same_run(r, reference)
    again = run(strategy="timed", driver="chunks", chunk_size=5, start_lr=1e-4)
    assert again.strategy == r.strategy and len(runner._TIMED) == 1


def test_timed_strategy_times_serial_on_its_threads(monkeypatch):
    runner._TIMED.clear()
    calls = []
    drive = runner.drive

    def spy(prog, groups, *args, **kw):
        calls.append((len(groups), kw["threads"]))
        return drive(prog, groups, *args, **kw)

    monkeypatch.setattr(runner, "drive", spy)
    r = run(strategy="timed", driver="chunks", chunk_size=5)
    # 4 rounds of the rules' choice (2 vmapped groups of 3 on 2 threads), vmap (one group)
    # and serial (6 one-lane groups on 2 threads), then the run with the fastest.
    candidates = {
        "serial[3]+threads[2]/chunks": (2, 2),
        "vmap/chunks": (1, 1),
        "serial+threads[2]/chunks": (6, 2),
    }
    assert calls[:12] == list(candidates.values()) * 4 and len(calls) == 13
    assert calls[12] == candidates[r.strategy]


def test_stop_early_with_chunks_and_progress(capsys):
    pytest.importorskip("tqdm")
    r = run(end_lr=1e6, diverge_threshold=1.2, progress=True, chunk_size=2, grid=None)
    d = int(r.diverged_at[0])
    assert 0 < d < 18 and r.strategy == "vmap/chunks"
    assert np.all(np.isnan(r.losses[0, d + 1 :]))
    assert "range test" in capsys.readouterr().err


def test_interrupt_returns_the_completed_chunks(monkeypatch):
    calls = []
    chunk = feeding.StepPlan.chunk

    def interrupt_on_third(self, start, length):
        calls.append(start)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return chunk(self, start, length)

    monkeypatch.setattr(feeding.StepPlan, "chunk", interrupt_on_third)
    with pytest.raises(clrjax.RangeTestInterrupted) as info:
        run(driver="chunks", chunk_size=5, diverge_threshold=None, end_lr=1.0)
    partial = info.value.result
    assert isinstance(info.value, KeyboardInterrupt)
    assert np.all(np.isfinite(partial.losses[:, :10])) and np.all(np.isnan(partial.losses[:, 10:]))
    monkeypatch.undo()
    full = run(driver="chunks", chunk_size=5, diverge_threshold=None, end_lr=1.0)
    np.testing.assert_allclose(partial.losses[:, :10], full.losses[:, :10], rtol=1e-6)


# ------------------------------------------------------------------ feeding


def test_batch_stream_takes_the_largest_batches_and_refuses_odd_streams():
    x = np.arange(64.0)[:, None]
    full = [(x[i : i + 16],) for i in range(0, 64, 16)]
    stream = feeding.BatchStream([(x[:5],), *full])  # a short first batch is dropped
    np.testing.assert_array_equal(stream.take(5)[0][:, 0, 0], [0, 16, 32, 48, 0])
    np.testing.assert_array_equal(stream.peek()[0][:, 0], x[16:32, 0])

    def endless_short():
        while True:
            yield (x[:5],)

    stream = feeding.BatchStream(endless_short())
    stream.take(1)
    with pytest.raises(ValueError, match="smaller than the batch size"):
        feeding.BatchStream(iter([(x[:16],), *[(x[:5],)] * 2000])).take(2)
    with pytest.raises(ValueError, match="must share one structure and shape"):
        feeding.BatchStream([(x[:16],), {"x": x[:16]}]).take(2)
    with pytest.raises(ValueError, match="must share one structure and shape"):
        feeding.BatchStream([(x[:16],), (np.zeros((16, 2)),)]).take(2)


def test_plan_chunks_pad_past_the_end():
    source = feeding.BatchSource(data=(X,), orders=np.arange(5 * 2).reshape(1, 5, 2))
    plan = feeding.StepPlan(5, {"learning_rate": np.arange(5.0)}, {}, np.ones(5, bool), source)
    xs, _ = plan.chunk(3, 4)
    np.testing.assert_array_equal(xs.step, [3, 4, 5, 6])
    np.testing.assert_array_equal(xs.active, [True, True, False, False])
    np.testing.assert_array_equal(xs.evaluate, [True, True, False, False])
    np.testing.assert_array_equal(xs.hparams["learning_rate"], [3, 4, 4, 4])
    np.testing.assert_array_equal(xs.batch[:, 0], [[6, 7], [8, 9], [8, 9], [8, 9]])


# ------------------------------------------------------------------ devices

SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import test_engine as t
    from clrjax._engine import runner

    devices_used = []
    drive = runner.drive

    def spy(program, groups, *args, **kw):
        devices_used.append(len(groups[0].carry.tracker.alive.sharding.device_set))
        return drive(program, groups, *args, **kw)

    runner.drive = spy
    grids = {{"8": {{"weight_decay": [0.0, 1e-4, 1e-3, 1e-2], "momentum": [0.5, 0.9]}},
              "6": t.GRID}}
    out = {{"devices": jax.device_count()}}
    for k, grid in grids.items():
        single = t.run(shard_lanes=False, driver="chunks", chunk_size=5, grid=grid)
        sharded = t.run(driver="chunks", chunk_size=5, grid=grid)
        out[k] = {{
            "strategy": sharded.strategy,
            "devices_used": devices_used[-1],
            "max_rel_diff": float(
                np.nanmax(np.abs(sharded.losses - single.losses) / np.abs(single.losses))
            ),
            "nan_equal": bool(np.array_equal(np.isnan(sharded.losses), np.isnan(single.losses))),
            "diverged_equal": bool(np.array_equal(sharded.diverged_at, single.diverged_at)),
        }}
    print(json.dumps(out))
    """
)


def test_lanes_on_8_cpu_devices_match_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["JAX_PLATFORMS"] = "cpu"
    script = SHARDED_SCRIPT.format(tests=str(pathlib.Path(__file__).parent))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    assert out["8"]["strategy"] == "vmap+sharded[8]/chunks"
    assert out["6"]["strategy"] == "vmap+sharded[6]/chunks"  # 6 lanes: at most 6 devices
    for k in ("8", "6"):
        assert out[k]["devices_used"] == int(k)
        assert out[k]["max_rel_diff"] < 1e-4, out[k]
        assert out[k]["nan_equal"] and out[k]["diverged_equal"]


def test_a_batch_the_mesh_data_axis_cannot_split_is_refused():
    # One process has one CPU device: an abstract mesh stands for two along "data".
    mesh = jax.sharding.AbstractMesh((1, 2), ("lanes", "data"))
    source = feeding.BatchSource(data=(X,), orders=np.zeros((1, 5, 3), np.int32))
    plan = feeding.StepPlan(5, {"learning_rate": np.ones(5)}, {}, np.ones(5, bool), source)
    with pytest.raises(ValueError, match=r"batch_size \(3\) must be a multiple of the mesh"):
        runner._batch_axis(plan, mesh)
    even = dataclasses.replace(source, orders=np.zeros((1, 5, 4), np.int32))
    assert runner._batch_axis(dataclasses.replace(plan, source=even), mesh) == 0


def test_a_larger_batch_after_the_run_started_is_refused():
    x = np.arange(64.0)[:, None]
    stream = feeding.BatchStream([(x[:16],), (x[16:32],), (x[:32],)])
    stream.take(2)
    with pytest.raises(ValueError, match="a batch of 32 examples arrived after the run started"):
        stream.take(1)


@pytest.mark.parametrize("data", [(), {}, None])
def test_data_without_arrays_is_refused(data):
    with pytest.raises(ValueError, match="data must contain at least one array"):
        clrjax.range_test(mlp_loss, MLP_PARAMS, data, batch_size=16, num_steps=20)
