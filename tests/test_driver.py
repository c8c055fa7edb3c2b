"""Tests for the range test's lane step, strategies and step drivers (stage 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clrjax import _driver, _lanes


def loss_fn(w, batch):
    return jnp.mean((batch[0] @ w - batch[1]) ** 2)


def make(cfg_kwargs=None, num_lanes=3, steps=8):
    cfg = _driver.StepConfig(
        loss_fn=loss_fn, optimizer=_lanes.pytorch_sgd, val_loss_fn=loss_fn, **(cfg_kwargs or {})
    )
    program = _driver.get_program(cfg)
    x = np.asarray(jax.random.normal(jax.random.key(0), (32, 2)))
    data = (jnp.asarray(x), jnp.asarray(x @ np.array([1.0, -1.0])))
    consts = {
        "hparams": {"weight_decay": jnp.zeros(num_lanes), "momentum": jnp.zeros(num_lanes)},
        "key": jnp.broadcast_to(jax.random.key(0), (num_lanes,)),
    }
    ctx = {"data": data, "beta": jnp.float32(0.0), "threshold": jnp.float32(4.0)}
    lrs = np.geomspace(1e-2, 1e3, steps).astype(np.float32)

    def inputs(start, length):
        s = np.arange(start, start + length)
        xs = {
            "step": s.astype(np.int32),
            "lr": lrs[np.minimum(s, steps - 1)],
            "active": s < steps,
            "val_now": np.zeros(length, bool),
            "idx": np.broadcast_to(np.arange(32, dtype=np.int32), (length, 1, 32)),
        }
        return xs, {}

    def init():
        return program.init(jnp.zeros(2), None, consts, jnp.float32(lrs[0]))

    return cfg, program, init, consts, ctx, inputs


def test_program_cache_is_keyed_on_static_config():
    cfg, program, *_ = make()
    assert _driver.get_program(cfg) is program
    other = _driver.StepConfig(
        loss_fn=loss_fn, optimizer=_lanes.pytorch_sgd, val_loss_fn=loss_fn, smoothing="ema"
    )
    assert _driver.get_program(other) is not program


@pytest.mark.parametrize("chunk_size", [1, 3, 8])
def test_drive_chunks_pad_and_agree(chunk_size):
    _, program, init, consts, ctx, inputs = make()
    _, reference, run = _driver.drive(
        program, init(), consts, ctx, inputs, 8, chunk_size=8, stop_early=False
    )
    assert run == 8
    _, outputs, run = _driver.drive(
        program, init(), consts, ctx, inputs, 8, chunk_size=chunk_size, stop_early=False
    )
    assert run == 8 and outputs["loss"].shape == (8, 3)
    np.testing.assert_allclose(outputs["loss"], reference["loss"], rtol=1e-6)


def test_drive_stops_early_and_reports_progress():
    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    _, program, init, consts, ctx, inputs = make(steps=40)
    bar = Bar()
    final, outputs, run = _driver.drive(
        program, init(), consts, ctx, inputs, 40, chunk_size=4, stop_early=True, progress=bar
    )
    assert not np.any(np.asarray(final["alive"]))
    diverged = int(np.asarray(final["diverged_at"])[0])
    assert run < 40 and run == bar.n
    assert run == 4 * (diverged // 4 + 1)  # stopped after the chunk where all lanes diverged
    assert outputs["loss"].shape == (run, 3)
