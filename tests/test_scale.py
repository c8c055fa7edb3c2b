"""Tests for lanes over many devices and processes: meshes ``("lanes", "data")``, jax.distributed.

Several CPU devices need a fresh process (the device count is fixed when JAX
starts): the mesh tests run a script under
``--xla_force_host_platform_device_count=8``, and the multi-process test runs
two processes of two CPU devices each (gloo collectives over localhost). Both
compare with the same runs on this process's single device.

The module defines the runs at its top level with NumPy only, so that a worker
process can import it before ``jax.distributed.initialize``.
"""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

TESTS = pathlib.Path(__file__).parent
_rng = np.random.default_rng(0)
X = _rng.normal(size=(96, 6)).astype(np.float32)
Y = (X @ _rng.normal(size=(6, 3))).argmax(axis=1).astype(np.int32)
W0 = {"w": (0.3 * _rng.normal(size=(6, 3))).astype(np.float32), "b": np.zeros(3, np.float32)}
GRID6 = {"weight_decay": [0.0, 1e-3, 1e-2], "momentum": [0.5, 0.9]}  # 6 lanes
GRID8 = {"weight_decay": [0.0, 1e-4, 1e-3, 1e-2], "momentum": [0.5, 0.9]}  # 8 lanes
FAST = dict(batch_size=16, num_steps=20, start_lr=1e-3, end_lr=300.0, diverge_threshold=1.2)
# Float32 summation order: a batch split over the "data" axis sums its partial
# gradients in another order; diverging lanes amplify that near their end.
RTOL = 2e-5


def flat(entry_point, *args, **kwargs):
    """``clrjax.<entry_point>`` with option fields given flat (``mesh=...``), as here."""
    from _flat_options import fold

    import clrjax

    fn = getattr(clrjax, entry_point)
    return fn(*args, **fold(fn, kwargs))


def loss_fn(params, batch):
    import jax
    import jax.numpy as jnp

    x, y = batch
    logits = x @ params["w"] + params["b"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def train_step(state, batch):
    """A plain train step with an injected SGD (for ``range_test_step``)."""
    import jax
    import optax

    loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
    updates, opt = _TX().update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss


def _TX():
    import optax

    return optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)


def runs(mesh=None, shard=None):
    """The runs compared across machines: ``name -> RangeTestResult`` (and a schedule choice).

    ``mesh``: the ``("lanes", "data")`` mesh of the runs that take one; ``shard``:
    ``shard_lanes`` of the others.
    """

    both = dict(mesh=mesh) if mesh is not None else dict(shard_lanes=shard)
    out = {
        "lanes": flat("range_test", loss_fn, W0, (X, Y), grid=GRID6, shard_lanes=shard, **FAST),
        "mesh": flat(
            "range_test",
            loss_fn,
            W0,
            (X, Y),
            grid=GRID6,
            val_data=(X[:32], Y[:32]),
            val_every=5,
            **both,
            **FAST,
        ),
        "step": flat(
            "range_test_step",
            train_step,
            {"params": W0, "opt": _TX().init(W0)},
            (X, Y),
            grid={"momentum": [0.0, 0.5, 0.9]},
            driver="chunks",  # outputs gathered chunk by chunk, a stop once every lane diverged
            chunk_size=4,
            **both,
            **FAST,
        ),
    }
    with warnings.catch_warnings():  # a tiny race may end at a bracket edge: it warns, rightly
        warnings.filterwarnings("ignore", "find_schedule. the winner")
        choice = flat(
            "find_schedule",
            loss_fn,
            W0,
            (X[:64], Y[:64]),
            val_data=(X[64:], Y[64:]),
            total_steps=18,
            batch_size=16,
            range_test_steps=12,
            start_lr=1e-3,
            grid={"weight_decay": [0.0, 1e-2]},
            progress=False,
            **both,
        )
    out["race"] = choice.rungs[-1]
    return out


def summary(results):
    """JSON-able arrays and strategies of :func:`runs`' results."""
    out = {}
    for name, r in results.items():
        if name == "race":
            out[name] = {
                "scores": np.asarray(r.scores).tolist(),
                "candidates": r.candidates.tolist(),
                "strategy": r.strategy,
            }
            continue
        out[name] = {
            "losses": np.asarray(r.losses).tolist(),
            "smoothed": np.asarray(r.smoothed).tolist(),
            "diverged_at": r.diverged_at.tolist(),
            "val_losses": None if r.val_losses is None else r.val_losses.tolist(),
            "strategy": r.strategy,
        }
    return out


def assert_same(got, want, rtol=RTOL):
    """``got`` (a :func:`summary`) equals ``want`` to float32 tolerance, NaN where it is NaN."""
    for name, w in want.items():
        g = got[name]
        for key in ("losses", "smoothed", "val_losses", "scores"):
            if w.get(key) is not None:
                a, b = np.asarray(g[key], float), np.asarray(w[key], float)
                np.testing.assert_allclose(a, b, rtol=rtol, equal_nan=True, err_msg=name + key)
        for key in ("diverged_at", "candidates"):
            if key in w:
                assert g[key] == w[key], name + key


def relative_difference(got, want):
    """The largest relative difference of the losses of two summaries (NaN ignored)."""
    diffs = []
    for name in want:
        key = "scores" if name == "race" else "losses"
        a, b = np.asarray(got[name][key], float), np.asarray(want[name][key], float)
        both = np.isfinite(a) & np.isfinite(b)
        diffs.append(np.max(np.abs(a[both] - b[both]) / np.abs(b[both]), initial=0.0))
    return max(diffs)


@pytest.fixture(scope="module")
def one_device():
    """The runs on this process's single device: the reference."""
    return summary(runs(shard=False))


def run_script(script, *args, devices, timeout=600):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        env=env,
        cwd=TESTS.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc, timeout=600):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"timed out; stderr: {err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------ two processes

WORKER = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    process, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(f"localhost:{{port}}", num_processes=2, process_id=process)
    import numpy as np
    sys.path.insert(0, {tests!r})
    import test_scale as t
    import clrjax

    # lanes over both processes' devices; each lane's batch over one process's two
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 2), ("lanes", "data"))
    out = t.summary(t.runs(mesh=mesh))
    # process-local shards of the data: each process holds half of the examples
    half = slice(48 * process, 48 * (process + 1))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("lanes", "data")))
    local = jax.make_array_from_process_local_data
    data = (local(sharding, t.X[half]), local(sharding, t.Y[half]))
    shards = t.flat("range_test", t.loss_fn, t.W0, data, grid=t.GRID6, **t.FAST)
    out["local_shards"] = t.summary({{"local_shards": shards}})["local_shards"]
    out["processes"], out["devices"] = jax.process_count(), jax.device_count()
    print(json.dumps(out))
    """
).format(tests=str(TESTS))


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_of_two_devices_match_one_device(one_device):
    port = free_port()
    procs = [run_script(WORKER, i, port, devices=2) for i in range(2)]
    outs = [finish(p) for p in procs]
    for out in outs:
        assert (out["processes"], out["devices"]) == (2, 4)
        # every process holds every lane, as one device computed them
        assert_same(out, one_device)
        assert_same({"lanes": out["local_shards"]}, {"lanes": one_device["lanes"]})
        assert out["lanes"]["strategy"] == "vmap+sharded[4]/scan"  # 6 lanes padded to 8
        assert out["mesh"]["strategy"] == "vmap+sharded[2]+data[2]/scan"
        assert out["step"]["strategy"] == "vmap+sharded[2]+data[2]/chunks"
        assert out["race"]["strategy"].startswith("vmap+sharded[2]+data[2]/")
    assert json.dumps(outs[0]) == json.dumps(outs[1])  # bit for bit the same on both processes


# ------------------------------------------------------------------ 8 devices, meshes

MESHES = textwrap.dedent(
    """
    import json, re, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import test_scale as t
    import clrjax
    from clrjax._engine import runner

    gathered = []  # the shapes each compiled chunk gathers across devices
    drive = runner.drive

    def spy(program, groups, shared, plan, **kw):
        if not plan.source.indexed:  # a chunk of a stream would consume its batches
            return drive(program, groups, shared, plan, **kw)
        xs, lane_xs = plan.chunk(0, kw["chunk_size"])
        own = jax.tree.map(lambda a: a[:, groups[0].lanes], lane_xs)
        carry, consts = groups[0].carry, groups[0].consts
        hlo = program.run.lower(carry, consts, shared, xs, own).compile().as_text()
        gathered.append(sorted(set(re.findall(r"= (\\w+\\[[\\d,]*\\])[^=]* all-gather", hlo))))
        return drive(program, groups, shared, plan, **kw)

    runner.drive = spy
    run = lambda **kw: t.flat("range_test", t.loss_fn, t.W0, (t.X, t.Y), **{{**t.FAST, **kw}})
    out = {{}}

    def record(name, r):
        out[name] = t.summary({{name: r}})[name]
        out[name]["gathered"] = gathered[-1] if gathered else None
        gathered.clear()

    for placement in ("vmap", "serial", "map"):
        kw = dict(grid=t.GRID8, strategy=placement, lane_group_size=2, driver="chunks")
        record(placement, run(shard_lanes=False, **kw))
        for shape in ((8, 1), (2, 4), (4, 2), (1, 8)):
            mesh = jax.make_mesh(shape, ("lanes", "data"))
            record(f"{{placement}} {{shape}}", run(mesh=mesh, **kw))
    mesh = jax.make_mesh((2, 4), ("lanes", "data"))
    # the axes in the other order, a micro-batch axis, a stream of batches, validation
    record("data first", run(grid=t.GRID6, mesh=jax.make_mesh((4, 2), ("data", "lanes"))))
    record("micro", run(grid=t.GRID6, accumulation_steps=2, mesh=mesh))
    record("auto 6", run(grid=t.GRID6))  # 6 lanes, 8 devices: 6 of them
    record("padded", run(grid=t.GRID6, mesh=jax.make_mesh((4, 2), ("lanes", "data"))))
    batches = [(t.X[i : i + 16], t.Y[i : i + 16]) for i in range(0, 96, 16)]
    stream = dict(grid=t.GRID6, val_data=(t.X[:24], t.Y[:24]), val_every=4, mesh=mesh)
    record("stream", t.flat("range_test", t.loss_fn, t.W0, batches, **{{**t.FAST, **stream}}))
    errors = {{}}
    for name, kw in {{
        "indivisible batch": dict(mesh=mesh, batch_size=18),
        "no such axes": dict(mesh=jax.make_mesh((2, 4), ("lanes", "batch"))),
        "mesh and shard_lanes=False": dict(mesh=mesh, shard_lanes=False),
    }}.items():
        try:
            run(grid=t.GRID6, **kw)
        except (ValueError, TypeError) as e:
            errors[name] = f"{{type(e).__name__}}: {{e}}"
    out["errors"] = errors
    print(json.dumps(out))
    """
).format(tests=str(TESTS))


@pytest.fixture(scope="module")
def eight_devices():
    return finish(run_script(MESHES, devices=8))


@pytest.mark.parametrize("placement", ["vmap", "serial", "map"])
@pytest.mark.parametrize("shape", [(8, 1), (2, 4), (4, 2), (1, 8)])
def test_meshes_of_8_devices_match_one_device(eight_devices, placement, shape):
    got, want = eight_devices[f"{placement} {shape}"], eight_devices[placement]
    # lanes alone: the one-device program on fewer lanes (an ulp where one lane runs unbatched)
    assert_same({"r": got}, {"r": want}, rtol=RTOL if shape[1] > 1 else 1e-6)
    group = "[2]" if placement != "vmap" else ""
    lanes = f"+sharded[{shape[0]}]" if shape[0] > 1 else ""
    data = f"+data[{shape[1]}]" if shape[1] > 1 else ""
    assert got["strategy"] == f"{placement}{group}{lanes}{data}/chunks"
    # each device runs its own lanes: only the chunk's outputs (2 steps x the call's lanes: all
    # 8, or a serial group of 2 per device) cross devices
    per_call = min(2, 8 // shape[0]) * shape[0] if placement == "serial" else 8
    pattern = rf"\w+\[2,{per_call}\]"
    assert got["gathered"] and all(re.fullmatch(pattern, g) for g in got["gathered"])


def test_8_devices_other_inputs_match_one_device(eight_devices):

    def one(**kw):
        return summary({"r": flat("range_test", loss_fn, W0, (X, Y), **{**FAST, **kw})})["r"]

    micro = one(grid=GRID6, accumulation_steps=2)
    assert_same({"r": eight_devices["micro"]}, {"r": micro})
    assert eight_devices["micro"]["strategy"] == "vmap+sharded[2]+data[4]/scan"
    plain = one(grid=GRID6)
    assert_same({"r": eight_devices["data first"]}, {"r": plain})
    assert eight_devices["data first"]["strategy"] == "vmap+sharded[2]+data[4]/scan"
    assert_same({"r": eight_devices["auto 6"]}, {"r": plain})
    assert eight_devices["auto 6"]["strategy"] == "vmap+sharded[6]/scan"
    assert_same({"r": eight_devices["padded"]}, {"r": plain})  # 6 lanes padded to 8, dropped
    assert eight_devices["padded"]["strategy"] == "vmap+sharded[4]+data[2]/scan"
    batches = [(X[i : i + 16], Y[i : i + 16]) for i in range(0, 96, 16)]
    stream = flat(
        "range_test",
        loss_fn,
        W0,
        batches,
        grid=GRID6,
        val_data=(X[:24], Y[:24]),
        val_every=4,
        **FAST,
    )
    assert_same({"r": eight_devices["stream"]}, summary({"r": stream}))
    assert eight_devices["stream"]["strategy"] == "vmap+sharded[2]+data[4]/chunks"


def test_8_devices_bad_meshes_are_refused(eight_devices):
    errors = eight_devices["errors"]
    assert errors["indivisible batch"].startswith("ValueError: batch_size (18)")
    assert "'data' axis (4)" in errors["indivisible batch"]
    assert errors["no such axes"].startswith("ValueError: mesh must have exactly the axes")
    assert "('lanes', 'batch')" in errors["no such axes"]
    assert errors["mesh and shard_lanes=False"].startswith(
        "ValueError: Execution.shard_lanes=False contradicts Execution.mesh"
    )


# ------------------------------------------------------------------ one device


def test_shard_lanes_with_one_device_runs_unsplit_and_says_so():

    split = flat("range_test", loss_fn, W0, (X, Y), grid=GRID6, shard_lanes=True, **FAST)
    plain = flat("range_test", loss_fn, W0, (X, Y), grid=GRID6, shard_lanes=False, **FAST)
    assert split.strategy == plain.strategy == "serial[3]+threads[2]/scan"  # no "+sharded[...]"
    np.testing.assert_array_equal(split.losses, plain.losses)


def test_a_mesh_of_one_device_runs_like_no_mesh():
    import jax

    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "lanes"))
    for strategy in ("vmap", "serial"):
        kw = dict(grid=GRID6, strategy=strategy, lane_group_size=4, **FAST)
        on_mesh = flat("range_test", loss_fn, W0, (X, Y), mesh=mesh, **kw)
        plain = flat("range_test", loss_fn, W0, (X, Y), **kw)
        assert on_mesh.strategy == plain.strategy
        np.testing.assert_allclose(on_mesh.losses, plain.losses, rtol=1e-6, equal_nan=True)
        np.testing.assert_array_equal(on_mesh.diverged_at, plain.diverged_at)


@pytest.mark.parametrize(
    ("mesh", "error", "match"),
    [
        ("lanes", TypeError, "mesh must be a jax.sharding.Mesh"),
        ((1, 1), TypeError, "mesh must be a jax.sharding.Mesh"),
        (("lanes",), ValueError, r"exactly the axes.*got the axes \('lanes',\)"),
        (("lanes", "batch"), ValueError, r"got the axes \('lanes', 'batch'\)"),
        (("lanes", "data", "model"), ValueError, "exactly the axes"),
    ],
)
def test_bad_meshes_are_refused(mesh, error, match):
    import jax

    if isinstance(mesh, tuple) and isinstance(mesh[0], str):
        devices = np.array(jax.devices()[:1]).reshape((1,) * len(mesh))
        mesh = jax.sharding.Mesh(devices, mesh)
    with pytest.raises(error, match=match):
        flat("range_test", loss_fn, W0, (X, Y), mesh=mesh, **FAST)


class FakeDevice:
    """A device as :func:`strategy.memory_budget` sees it."""

    def __init__(self, process_index, free=None):
        self.process_index, self.free = process_index, free

    def memory_stats(self):
        if self.process_index != 0:
            raise RuntimeError("MemoryStats is only supported for addressable PjRt devices")
        return None if self.free is None else {"bytes_limit": self.free, "bytes_in_use": 0}


def test_the_memory_budget_asks_only_this_process_devices(monkeypatch):
    from clrjax._engine import strategy

    assert strategy.memory_budget(123.0, [FakeDevice(1)]) == 123.0
    # accelerators: 90% of the least free memory among this process's devices
    devices = [FakeDevice(0, 100), FakeDevice(0, 50), FakeDevice(1), FakeDevice(1)]
    assert strategy.memory_budget(None, devices) == pytest.approx(45.0)
    # CPU devices share the RAM: half the available RAM, divided among them
    monkeypatch.setattr(strategy, "host_memory_budget", lambda: 800.0)
    assert strategy.memory_budget(None, [FakeDevice(0), FakeDevice(0), FakeDevice(1)]) == 400.0
