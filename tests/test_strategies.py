"""Tests for the range test's lane strategies, step drivers, auto choice and memory chunking."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax
from clrjax import _driver

N = 96
X = np.asarray(jax.random.normal(jax.random.key(0), (N, 4, 4, 1)))
Y = np.asarray(jax.random.randint(jax.random.key(1), (N,), 0, 3))
GRID = {"weight_decay": [0.0, 1e-3, 1e-2], "momentum": [0.5, 0.9]}  # 6 lanes
FAST = dict(
    batch_size=16,
    num_steps=20,
    start_lr=1e-3,
    end_lr=100.0,
    diverge_threshold=1.5,
    stop_early=False,
)


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
    return clrjax.range_test(loss_fn, params, (X, Y), **{"grid": GRID, **FAST, **kw})


@pytest.fixture(scope="module")
def reference():
    return run(lanes="vmap", driver="scan")


def assert_same_run(result, reference):
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-4, equal_nan=True)
    np.testing.assert_allclose(result.smoothed, reference.smoothed, rtol=1e-4, equal_nan=True)
    np.testing.assert_array_equal(result.diverged_at, reference.diverged_at)


def test_reference_run_diverges_in_some_lanes(reference):
    # The comparisons below cover diverged lanes too: some lanes diverge, not all at once.
    assert reference.strategy == "vmap/scan"
    assert np.any(reference.diverged_at >= 0)
    assert len(set(reference.diverged_at.tolist())) > 1


@pytest.mark.parametrize(
    ("lanes", "lane_batch_size", "strategy"),
    [
        ("map", 4, "map[4]/chunks"),  # 6 lanes: a chunk of 4 and a remainder of 2
        ("sequential", None, "sequential/chunks"),
        ("serial", None, "serial/chunks"),  # one lane after another, through each chunk
        ("serial", 4, "serial[4]/chunks"),  # groups of 4 (vmapped) and a remainder of 2
        ("sharded", None, "sharded[1]/chunks"),  # one device here; 8 in the subprocess test
    ],
)
def test_lane_strategies_match_vmap(reference, lanes, lane_batch_size, strategy):
    r = run(lanes=lanes, lane_batch_size=lane_batch_size, driver="chunks", chunk_size=5)
    assert r.strategy == strategy
    assert_same_run(r, reference)


def poisoned_sgd(learning_rate, poison):
    """SGD whose updates are NaN in lanes with ``poison > 0``."""
    nan_or_one = jnp.where(poison > 0, jnp.nan, 1.0)
    return optax.chain(clrjax._lanes.pytorch_sgd(learning_rate), optax.scale(nan_or_one))


@pytest.mark.parametrize("lanes", ["vmap", "serial", "map", "sequential"])
def test_a_nan_lane_never_reaches_the_others(lanes):
    # Lane 1's params turn NaN after its first update and are never frozen: the
    # other lanes must train exactly as they do without it.
    kw = dict(optimizer=poisoned_sgd, diverge_threshold=None, end_lr=1.0, lanes=lanes)
    r = run(grid={"poison": [0.0, 1.0, 0.0]}, lane_batch_size=2, **kw)
    alone = run(grid={"poison": [0.0]}, **kw)
    assert r.diverged_at.tolist() == [-1, 1, -1]
    assert np.all(np.isnan(r.losses[1, 2:])) and np.all(np.isfinite(r.losses[[0, 2]]))
    for i in (0, 2):
        np.testing.assert_allclose(r.losses[i], alone.losses[0], rtol=1e-5)


@pytest.mark.parametrize("driver", ["chunks", "unrolled", "python"])
def test_step_drivers_match_scan(reference, driver):
    r = run(lanes="vmap", driver=driver, chunk_size=5)
    assert r.strategy == f"vmap/{driver}"
    assert_same_run(r, reference)


def test_unrolled_and_python_programs_have_no_loops_or_conditionals():
    cfg = _driver.StepConfig(
        loss_fn=cnn_loss, optimizer=clrjax._lanes.pytorch_sgd, val_loss_fn=cnn_loss
    )
    for driver, loops in (("chunks", True), ("unrolled", False), ("python", False)):
        program = _driver.get_program(_driver.dataclasses.replace(cfg, driver=driver))
        consts = {"hparams": {}, "key": jnp.broadcast_to(jax.random.key(0), (2,))}
        carry = program.init(CNN_PARAMS, None, consts, jnp.float32(0.1))
        ctx = {"data": (X, Y), "beta": jnp.float32(0.9), "threshold": jnp.float32(4.0)}
        length = 1 if driver == "python" else 3
        xs = {
            "step": np.arange(length, dtype=np.int32),
            "lr": np.full(length, 0.1, np.float32),
            "active": np.ones(length, bool),
            "val_now": np.zeros(length, bool),
            "idx": np.zeros((length, 1, 16), np.int32),
        }
        hlo = program.run.lower(carry, consts, ctx, xs, {}).as_text()
        assert ("while" in hlo or "stablehlo.case" in hlo) == loops, driver


def test_auto_picks_a_strategy_records_and_caches_it(reference):
    _driver._CHOICES.clear()
    r = run(lanes="auto", driver="auto")
    lanes, driver = r.strategy.split("/")
    assert lanes in ("vmap", "serial", "sequential") and driver in ("chunks", "scan")
    assert len(_driver._CHOICES) == 1
    assert_same_run(r, reference)
    again = run(lanes="auto", driver="auto", start_lr=1e-4)  # new values, same shapes
    assert again.strategy == r.strategy and len(_driver._CHOICES) == 1


@pytest.mark.parametrize("scan_driver", ["scan", "python"])
def test_serial_strategy_matches_vmap_with_every_step_driver(reference, scan_driver):
    r = run(lanes="serial", driver=scan_driver)
    assert r.strategy == f"serial/{scan_driver}"
    assert_same_run(r, reference)


def test_serial_runs_as_one_scan_unless_chunks_are_asked_for(reference):
    # Early stop needs no chunks: a diverged lane skips its steps inside the program.
    one_scan = run(lanes="serial", stop_early=True)
    assert one_scan.strategy == "serial/scan"
    assert_same_run(one_scan, reference)
    assert run(lanes="serial", stop_early=True, chunk_size=5).strategy == "serial/chunks"
    assert run(lanes="serial", stop_early=False, driver="chunks").strategy == "serial/chunks"


def auto_candidates(num_lanes: int, footprint: _driver.Footprint) -> list[str]:
    """The strategies ``auto`` would time for an MLP step with ``footprint``."""
    cfg = _driver.StepConfig(
        loss_fn=mlp_loss,
        optimizer=clrjax._lanes.pytorch_sgd,
        val_loss_fn=mlp_loss,
        lanes="auto",
        driver="auto",
    )
    got = _driver._candidates(cfg, num_lanes, footprint, num_lanes, wants_chunks="")
    return [_driver.describe(c) for c in got]


@pytest.mark.parametrize(
    ("num_lanes", "convolutions", "state_mib", "expected"),
    [
        (16, False, 0, ["vmap/scan"]),  # small state: only vmap
        (16, False, 32, ["vmap/chunks", "serial/chunks"]),
        (4, False, 0, ["vmap/chunks", "sequential/chunks"]),
        (4, False, 32, ["vmap/chunks", "serial/chunks", "sequential/chunks"]),
        (4, True, 32, ["vmap/python", "sequential/python"]),  # no lanes loop around convolutions
        (1, False, 32, ["vmap/scan"]),  # nothing to choose between
    ],
)
def test_auto_candidates_on_cpu(num_lanes, convolutions, state_mib, expected):
    big = _driver.Footprint(state_mib << 20, 2 * _driver._PROBE_MIN_BYTES, 0, convolutions)
    assert auto_candidates(num_lanes, big) == expected
    small = _driver.Footprint(state_mib << 20, _driver._PROBE_MIN_BYTES // 2, 0, convolutions)
    assert auto_candidates(num_lanes, small) == [expected[0].replace("chunks", "scan")]


@pytest.mark.parametrize(
    ("convolutions", "expected"),
    [(True, ["vmap/chunks", "serial/chunks"]), (False, ["vmap/scan"])],
)
def test_auto_candidates_on_an_accelerator(monkeypatch, convolutions, expected):
    # vmapped convolutions become grouped ones: an accelerator also tries plain ones.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    footprint = _driver.Footprint(0, 2 * _driver._PROBE_MIN_BYTES, 0, convolutions)
    assert auto_candidates(64, footprint) == expected


def test_auto_on_cpu_drives_convolutions_without_loops():
    r = run(loss_fn=cnn_loss, params=CNN_PARAMS, lanes="auto", driver="auto")
    assert r.strategy == "vmap/python"
    reference = run(loss_fn=cnn_loss, params=CNN_PARAMS, lanes="vmap", driver="scan")
    assert_same_run(r, reference)


def test_explicit_strategy_overrides_auto():
    assert run(lanes="sequential", driver="python").strategy == "sequential/python"


def test_memory_estimate_bounds_the_compiled_program():
    cfg = _driver.StepConfig(
        loss_fn=mlp_loss, optimizer=clrjax._lanes.pytorch_sgd, val_loss_fn=mlp_loss, driver="python"
    )
    program = _driver.get_program(cfg)
    consts = {"hparams": {}, "key": jnp.broadcast_to(jax.random.key(0), (6,))}
    carry = program.init(MLP_PARAMS, None, consts, jnp.float32(0.1))
    ctx = {"data": (X, Y), "beta": jnp.float32(0.9), "threshold": jnp.float32(4.0)}
    xs = {
        "step": np.zeros(1, np.int32),
        "lr": np.full(1, 0.1, np.float32),
        "active": np.ones(1, bool),
        "val_now": np.zeros(1, bool),
        "idx": np.zeros((1, 1, 16), np.int32),
    }
    footprint = _driver.estimate_memory(cfg, carry, consts, ctx, xs, {})
    assert not footprint.convolutions
    assert footprint.lane_state == sum(a.nbytes for a in jax.tree.leaves(carry))
    assert footprint.shared == X.nbytes + Y.nbytes + 8
    compiled = program.run.lower(carry, consts, ctx, xs, {}).compile().memory_analysis()
    if compiled is not None:
        assert footprint.intermediates >= compiled.temp_size_in_bytes
    assert footprint.total(6, 1) < footprint.total(6, 6)
    assert _driver.lanes_that_fit(footprint, 6, footprint.total(6, 3)) == 3
    assert _driver.lanes_that_fit(footprint, 6, 0) == 1


def test_tiny_max_memory_chunks_the_lanes(reference):
    r = run(lanes="auto", max_memory=1)
    assert r.strategy.startswith("map[1]/")
    assert_same_run(r, reference)
    plenty = run(lanes="auto", max_memory=1e12)
    assert not plenty.strategy.startswith("map")


def test_map_without_lane_batch_size_fits_the_budget(reference):
    r = run(lanes="map", driver="chunks", max_memory=1)
    assert r.strategy == "map[1]/chunks"
    assert_same_run(r, reference)


def test_caller_params_are_not_donated():
    params = jax.tree.map(jnp.array, MLP_PARAMS)
    for driver in ("scan", "unrolled", "python"):
        run(params=params, lanes="vmap", driver=driver)
        for leaf in jax.tree.leaves(params):
            assert not leaf.is_deleted()
    np.testing.assert_array_equal(params["w1"], MLP_PARAMS["w1"])


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import test_strategies as t
    from clrjax import _driver

    devices_used = []
    drive = _driver.drive

    def spy(program, carry, *args, **kw):
        devices_used.append(len(carry["alive"].sharding.device_set))
        return drive(program, carry, *args, **kw)

    _driver.drive = spy
    grids = {{"8": {{"weight_decay": [0.0, 1e-4, 1e-3, 1e-2], "momentum": [0.5, 0.9]}},
              "6": t.GRID}}
    out = {{"devices": jax.device_count()}}
    for k, grid in grids.items():
        single = t.run(lanes="vmap", driver="chunks", chunk_size=5, grid=grid)
        sharded = t.run(lanes="sharded", driver="chunks", chunk_size=5, grid=grid)
        out[k] = {{
            "strategy": sharded.strategy,
            "devices_used": devices_used[-1],
            "max_rel_diff": float(
                np.nanmax(np.abs(sharded.losses - single.losses) / np.abs(single.losses))
            ),
            "nan_equal": bool(np.array_equal(np.isnan(sharded.losses), np.isnan(single.losses))),
            "diverged_equal": bool(np.array_equal(sharded.diverged_at, single.diverged_at)),
        }}
    out["auto"] = t.run(lanes="auto", driver="chunks", chunk_size=5).strategy
    print(json.dumps(out))
    """
)


def test_sharded_lanes_on_8_cpu_devices_match_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["JAX_PLATFORMS"] = "cpu"
    script = SHARDED_SCRIPT.format(tests=str(pathlib.Path(__file__).parent))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    assert out["8"]["strategy"] == "sharded[8]/chunks"
    assert out["6"]["strategy"] == "sharded[6]/chunks"  # the most devices dividing 6 lanes
    for k in ("8", "6"):
        assert out[k]["devices_used"] == int(k)
        assert out[k]["max_rel_diff"] < 1e-4, out[k]
        assert out[k]["nan_equal"] and out[k]["diverged_equal"]
    assert out["auto"].split("/")[0].split("[")[0] in ("vmap", "serial", "sequential", "sharded")
