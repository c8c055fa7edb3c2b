"""Tests for clrjax.range_test (the vmapped LR range test)."""

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
from _flat_options import fold

import clrjax
from clrjax import _grid, _ramp
from clrjax._engine import feeding

# A tiny least-squares problem shared by most tests, so compiled programs are reused.
N, D = 64, 3
X = np.asarray(jax.random.normal(jax.random.key(0), (N, D)))
Y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * np.asarray(jax.random.normal(jax.random.key(1), (N,)))
W0 = np.zeros(D, np.float32)
# The tests below check the rules fastai and torch-lr-finder share (the rebound rule,
# on by default, has its own tests at the end).
FAST = dict(
    batch_size=16,
    num_steps=30,
    start_lr=1e-3,
    end_lr=3.0,
    curve=clrjax.Curve(diverge_rebound=None),
)


def mse(w, batch):
    x, y = batch
    return jnp.mean((x @ w - y) ** 2)


def run(**kw):
    """``range_test`` on the shared problem; option fields may be given flat (``beta=0.9``)."""
    args = fold(clrjax.range_test, {**FAST, **kw})
    loss_fn = args.pop("loss_fn", mse)
    params = args.pop("params", jnp.asarray(W0))
    data = args.pop("data", (X, Y))
    return clrjax.range_test(loss_fn, params, data, **args)


def reference_smoothing(losses, kind, beta):
    out, ema = [], 0.0
    for t, loss in enumerate(losses):
        if kind == "debiased_ema":
            ema = beta * ema + (1 - beta) * loss
            out.append(ema / (1 - beta ** (t + 1)))
        else:
            ema = loss if t == 0 else beta * ema + (1 - beta) * loss
            out.append(ema)
    return np.array(out)


def reference_diverged_at(smoothed, losses, threshold):
    best = np.inf
    for t, (s, loss) in enumerate(zip(smoothed, losses, strict=True)):
        best = min(best, s)
        if not np.isfinite(loss) or s - best > (threshold - 1) * abs(best):
            return t
    return -1


# ------------------------------------------------------------------ basics


def test_result_fields_and_grid_order():
    grid = {"weight_decay": [1e-3, 1e-4, 0.0], "momentum": [0.9, 0.95]}
    r = run(grid=grid)
    assert isinstance(r, clrjax.RangeTestResult)
    assert r.losses.shape == r.smoothed.shape == (6, 30)
    assert r.diverged_at.shape == (6,)
    assert r.grid_names == ("weight_decay", "momentum")
    np.testing.assert_allclose(r.hparams["weight_decay"], [1e-3, 1e-3, 1e-4, 1e-4, 0, 0])
    np.testing.assert_allclose(r.hparams["momentum"], [0.9, 0.95] * 3)
    assert r.val_steps is None and r.val_losses is None
    assert r.strategy == "serial[3]+threads[2]/scan"  # 6 lanes: a vmapped group per thread
    np.testing.assert_allclose(r.lrs, 1e-3 * 3000.0 ** (np.arange(30) / 29), rtol=1e-12)
    assert np.all(np.isfinite(r.losses[:, 0]))


@pytest.mark.parametrize(
    ("ramp", "convention", "expected"),
    [
        ("exp", "torch", 0.01 * 100.0 ** (np.arange(5) / 4)),
        ("exp", "fastai", 0.01 * 100.0 ** (np.arange(5) / 5)),
        ("linear", "torch", 0.01 + (1.0 - 0.01) * np.arange(5) / 4),
        ("linear", "fastai", 0.01 + (1.0 - 0.01) * np.arange(5) / 5),
    ],
)
def test_lr_grids(ramp, convention, expected):
    lrs = _ramp.lr_ramp(0.01, 1.0, 5, ramp, convention)
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    r = run(
        num_steps=5, start_lr=0.01, end_lr=1.0, ramp=ramp, ramp_convention=convention, batch_size=8
    )
    np.testing.assert_allclose(r.lrs, expected, rtol=1e-12)


def test_no_recompile_for_new_values():
    traces = []

    def loss_fn(w, batch):
        traces.append(1)
        return mse(w, batch)

    first = run(loss_fn=loss_fn, grid={"weight_decay": [1e-3, 0.0], "momentum": [0.9, 0.8]})
    count = len(traces)
    assert count >= 1
    second = run(
        loss_fn=loss_fn,
        start_lr=1e-4,
        end_lr=0.5,
        grid={"weight_decay": [1e-2, 1e-5], "momentum": [0.0, 0.5]},
        diverge_threshold=6.0,
        beta=0.9,
    )
    assert len(traces) == count
    assert not np.allclose(first.losses[:, 5:], second.losses[:, 5:], equal_nan=True)


def test_lanes_match_single_runs_and_params_untouched():
    params = jnp.asarray(W0) + 0.5
    before = np.asarray(params).copy()
    grid = {"weight_decay": [1e-2, 0.0], "momentum": [0.9, 0.0]}
    r = run(params=params, grid=grid, end_lr=10.0)
    assert len(set(r.diverged_at.tolist())) > 1  # NaN lanes run beside live ones
    for i in range(r.num_lanes):
        single = run(
            params=params,
            end_lr=10.0,
            grid={k: [v[i]] for k, v in r.hparams.items()},
        )
        np.testing.assert_allclose(single.losses[0], r.losses[i], rtol=1e-5, equal_nan=True)
        assert single.diverged_at[0] == r.diverged_at[i]
    assert not params.is_deleted()
    np.testing.assert_array_equal(np.asarray(params), before)


def test_default_optimizer_is_torch_sgd():
    mu, wd, lr = 0.9, 0.1, 0.05
    r = run(
        grid={"momentum": [mu], "weight_decay": [wd]},
        start_lr=lr,
        end_lr=lr * (1 + 1e-6),
        num_steps=3,
        batch_size=N,
        shuffle=False,
    )
    w, buf = W0.astype(np.float64), np.zeros(D)
    for t in range(3):
        residual = X @ w - Y
        np.testing.assert_allclose(r.losses[0, t], np.mean(residual**2), rtol=1e-5)
        g = 2 * X.T @ residual / N + wd * w
        buf = mu * buf + g
        w = w - r.lrs[t] * buf


GOLDENS = json.loads(
    (pathlib.Path(__file__).parent / "data" / "range_test_goldens.json").read_text()
)


@pytest.mark.parametrize("case", GOLDENS["cases"], ids=lambda c: c["name"])
def test_matches_torch_lr_finder(case):
    # scripts/gen_range_test_goldens.py: torch-lr-finder + torch.optim.SGD, ordered batches.
    r = clrjax.range_test(
        mse,
        jnp.asarray(GOLDENS["w0"]),
        (np.asarray(GOLDENS["x"], np.float32), np.asarray(GOLDENS["y"], np.float32)),
        batch_size=GOLDENS["batch_size"],
        num_steps=case["num_iter"],
        start_lr=case["start_lr"],
        end_lr=case["end_lr"],
        grid={"momentum": [case["momentum"]], "weight_decay": [case["weight_decay"]]},
        shuffle=False,
        curve=clrjax.Curve(
            ramp=case["step_mode"],
            smoothing="ema",
            beta=1 - case["smooth_f"],
            diverge_threshold=case["diverge_th"],
            diverge_rebound=None,  # torch-lr-finder has only the threshold rule
        ),
    )
    k = len(case["lrs"])
    assert k < case["num_iter"]  # torch-lr-finder stopped at the diverging step ...
    assert r.diverged_at[0] == k - 1  # ... which is where the lane diverged
    np.testing.assert_allclose(r.lrs[:k], case["lrs"], rtol=1e-12)
    np.testing.assert_allclose(r.smoothed[0, :k], case["smoothed"], rtol=2e-4)


# --------------------------------------------------------------- divergence


def test_nan_lane_is_masked_and_does_not_spread():
    def loss_fn(w, batch):  # NaN once the weights get large
        loss = mse(w, batch)
        return jnp.where(jnp.sum(w**2) > 50.0, jnp.nan, loss)

    r = run(loss_fn=loss_fn, grid={"weight_decay": [0.0, 1e-2]}, end_lr=100.0)
    for i in range(2):
        d = r.diverged_at[i]
        assert d > 0
        assert np.all(np.isfinite(r.losses[i, :d]))
        assert np.all(np.isnan(r.losses[i, d + 1 :]))
        assert np.all(np.isnan(r.smoothed[i, d + 1 :]))
    short = run(loss_fn=loss_fn, grid={"weight_decay": [1e-2]}, end_lr=0.3)
    assert short.diverged_at[0] == -1 and np.all(np.isfinite(short.losses))


@pytest.mark.parametrize("offset", [0.0, -50.0])
@pytest.mark.parametrize("threshold", [4.0, 1.5])
def test_divergence_rule_matches_reference(offset, threshold):
    def loss_fn(w, batch):
        return mse(w, batch) + offset

    r = run(loss_fn=loss_fn, end_lr=10.0, diverge_threshold=threshold, beta=0.98)
    raw = r.losses[0]
    d = r.diverged_at[0]
    assert d > 0
    smoothed = reference_smoothing(raw[: d + 1], "debiased_ema", 0.98)
    np.testing.assert_allclose(r.smoothed[0, : d + 1], smoothed, rtol=1e-5)
    assert reference_diverged_at(smoothed, raw[: d + 1], threshold) == d


def test_threshold_none_flags_only_non_finite():
    r = run(diverge_threshold=None, end_lr=1e4)
    d = r.diverged_at[0]
    assert d > 0 and not np.isfinite(r.losses[0, d])
    assert np.all(np.isfinite(r.losses[0, :d]))


@pytest.mark.parametrize(
    ("smoothing", "beta"), [("debiased_ema", 0.98), ("ema", 0.95), ("ema", 0.0)]
)
def test_smoothing_formulas(smoothing, beta):
    r = run(smoothing=smoothing, beta=beta, end_lr=0.3, diverge_threshold=None)
    assert r.diverged_at[0] == -1
    np.testing.assert_allclose(
        r.smoothed[0], reference_smoothing(r.losses[0], smoothing, beta), rtol=1e-5
    )


def test_closed_form_least_squares_thresholds():
    # Full-batch GD on 1/(2n)|Xw|^2 with coupled weight decay wd multiplies the
    # weights' component along each eigenvector of H = X^T X / n by 1 - lr (lambda + wd):
    # the loss falls at every step while lr < 2 / (lambda_max + wd) and grows once
    # lr passes it. With no smoothing and threshold 1.001 a lane is flagged at the
    # step after the first update past its threshold (tolerance: 0.1% in lr).
    q = np.linalg.qr(np.asarray(jax.random.normal(jax.random.key(2), (N, D))))[0]
    x = np.sqrt(N) * q * np.sqrt([2.0, 0.5, 0.5])  # H = diag(2, 0.5, 0.5) in q's basis
    lam = np.linalg.eigvalsh(x.T @ x / N).max()
    wds = np.array([0.0, 0.1, 0.2, 0.4])
    thresholds = 2 / (lam + wds)

    def loss_fn(w, batch):
        xb, _ = batch
        return 0.5 * jnp.mean((xb @ w) ** 2)

    r = clrjax.range_test(
        loss_fn,
        jnp.ones(D),
        (x, np.zeros(N)),
        batch_size=N,
        num_steps=40,
        start_lr=0.75,
        end_lr=1.1,
        grid={"weight_decay": wds, "momentum": [0.0]},
        shuffle=False,
        curve=clrjax.Curve(ramp="linear", beta=0.0, diverge_threshold=1.001),
    )
    for i, thr in enumerate(thresholds):
        d = r.diverged_at[i]
        assert d > 1
        assert r.lrs[d - 1] > thr  # never flagged before its own threshold ...
        assert r.lrs[d - 2] < thr * 1.001  # ... and right after it
        assert np.all(np.diff(r.losses[i, :d]) < 0)


def test_stop_early_skips_remaining_work():
    r = run(end_lr=1e4, driver="chunks", chunk_size=5)
    d = r.diverged_at[0]
    assert 0 < d < 29
    assert np.all(np.isnan(r.losses[0, d + 1 :]))


# ------------------------------------------------------------ strategies


@pytest.mark.parametrize(
    ("placement", "driver", "label"),
    [
        ("vmap", "chunks", "vmap/chunks"),
        ("vmap", "python", "vmap/python"),
        ("map", "chunks", "map[3]/chunks"),
        ("map", "python", "map[3]/python"),
        ("serial", "scan", "serial[3]+threads[2]/scan"),
        ("serial", "chunks", "serial[3]+threads[2]/chunks"),
    ],
)
def test_strategies_agree(placement, driver, label):
    grid = {"weight_decay": [1e-3, 0.0], "momentum": [0.9, 0.5]}
    reference = run(grid=grid, end_lr=30.0, strategy="vmap", driver="scan")
    assert reference.strategy == "vmap/scan"
    r = run(grid=grid, end_lr=30.0, strategy=placement, driver=driver, lane_group_size=3)
    assert r.strategy == label
    np.testing.assert_allclose(r.losses, reference.losses, rtol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(r.diverged_at, reference.diverged_at)


@pytest.mark.usefixtures("x64")
def test_x64_learning_rates_keep_state_dtypes():
    # float64 LRs/hyperparameters with float32 params: params, hyperparameters and the
    # optimizer state stay float32 (a float64 state would be refused as a changed dtype).
    seen = []

    def recording_sgd(learning_rate, momentum, weight_decay):
        seen.append((learning_rate.dtype, momentum.dtype, weight_decay.dtype))
        return clrjax.pytorch_sgd(learning_rate, momentum, weight_decay)

    grid = {"weight_decay": [1e-3, 0.0], "momentum": [0.9, 0.5]}
    r = run(optimizer=recording_sgd, grid=grid)
    assert np.all(np.isfinite(r.losses[:, 0]))
    assert set(seen) == {(jnp.dtype(jnp.float32),) * 3}
    assert r.lrs.dtype == np.float64
    seen.clear()
    w64 = run(params=jnp.zeros(D, jnp.float64), optimizer=recording_sgd, grid=grid)
    assert set(seen) == {(jnp.dtype(jnp.float64),) * 3}
    assert np.all(np.isfinite(w64.losses[:, 0]))


def test_shard_lanes_over_two_devices():
    # A fresh process: the CPU device count is fixed when JAX starts.
    script = textwrap.dedent(
        """
        import jax, numpy as np, clrjax
        from clrjax._engine import runner as engine_run
        assert len(jax.devices()) == 2
        x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
        data = (x, x.sum(1))
        loss = lambda w, b: ((b[0] @ w - b[1]) ** 2).mean()
        kw = dict(batch_size=16, num_steps=20, start_lr=1e-3, end_lr=10.0,
                  grid={"weight_decay": [1e-3, 0.0], "momentum": [0.9, 0.5]})
        shardings = []
        drive = engine_run.drive
        def spy(program, groups, *args, **kwargs):
            shardings.append(getattr(groups[0].carry.train.params.sharding, "spec", None))
            return drive(program, groups, *args, **kwargs)
        engine_run.drive = spy
        unsharded = clrjax.Execution(shard_lanes=False)
        a = clrjax.range_test(loss, np.zeros(3, np.float32), data, execution=unsharded, **kw)
        assert "sharded" not in a.strategy, a.strategy
        b = clrjax.range_test(loss, np.zeros(3, np.float32), data, **kw)  # auto: sharded
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5)
        assert b.strategy == "vmap+sharded[2]/scan", b.strategy
        assert shardings[1] == jax.sharding.PartitionSpec("lanes"), shardings
        for placement in ("serial", "map"):
            sharded = clrjax.Execution(shard_lanes=True, strategy=placement)
            c = clrjax.range_test(loss, np.zeros(3, np.float32), data, execution=sharded, **kw)
            np.testing.assert_allclose(a.losses, c.losses, rtol=1e-5)
            assert "+sharded[2]/" in c.strategy, c.strategy
        # 3 lanes over 2 devices: padded to 4, the padding dropped
        kw["grid"] = {"weight_decay": [1e-3, 1e-2, 0.0]}
        d = clrjax.range_test(loss, np.zeros(3, np.float32), data, execution=unsharded, **kw)
        sharded = clrjax.Execution(shard_lanes=True)
        e = clrjax.range_test(loss, np.zeros(3, np.float32), data, execution=sharded, **kw)
        assert e.losses.shape == (3, 20) and e.strategy == "vmap+sharded[2]/scan"
        np.testing.assert_allclose(d.losses, e.losses, rtol=1e-5)
        np.testing.assert_array_equal(d.diverged_at, e.diverged_at)
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["JAX_PLATFORMS"] = "cpu"
    root = pathlib.Path(__file__).parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_custom_optimizer_grid():
    r = run(optimizer=optax.adam, grid={"b1": [0.9, 0.5]}, end_lr=1.0)
    assert r.losses.shape == (2, 30)
    assert not np.allclose(r.losses[0, 5:], r.losses[1, 5:], equal_nan=True)


# ------------------------------------------------------------------ data


def test_shuffle_and_batch_indices():
    idx = feeding.batch_orders(10, 3, 7, True, np.random.default_rng(0))
    assert idx.shape == (7, 3)
    for epoch in (idx[:3], idx[3:6]):  # 3 full batches per epoch, no repeats inside
        assert len(set(epoch.ravel())) == 9
    assert not np.array_equal(idx[:3], idx[3:6])
    plain = feeding.batch_orders(10, 3, 4, False, np.random.default_rng(0))
    np.testing.assert_array_equal(plain.ravel(), [0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2])


def test_dict_batches_and_has_aux():
    def loss_fn(w, batch):
        loss = mse(w, (batch["x"], batch["y"]))
        return loss, {"loss": loss}

    r = run(loss_fn=loss_fn, data={"x": X, "y": Y}, has_aux=True, shuffle=False)
    reference = run(shuffle=False)
    np.testing.assert_allclose(r.losses, reference.losses, rtol=1e-6, equal_nan=True)


def test_iterable_of_batches_matches_arrays():
    batches = [(X[i : i + 16], Y[i : i + 16]) for i in range(0, N, 16)]
    reference = run(shuffle=False)
    r = run(data=[*batches, (X[:5], Y[:5])])  # the short batch is skipped
    np.testing.assert_allclose(r.losses, reference.losses, rtol=1e-6, equal_nan=True)
    generated = run(data=(b for b in batches * 8), shuffle=False)
    np.testing.assert_allclose(generated.losses, reference.losses, rtol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="ran out"):
        run(data=iter(batches))


def test_gradient_accumulation_equals_larger_batch():
    reference = run(batch_size=32, shuffle=False)
    r = run(batch_size=16, accumulation_steps=2, shuffle=False)
    np.testing.assert_allclose(r.losses, reference.losses, rtol=1e-5, equal_nan=True)


def test_validation_losses():
    full = dict(batch_size=N, shuffle=False, num_steps=12, end_lr=0.3)
    r = run(val_data=(X, Y), val_every=3, **full)
    np.testing.assert_array_equal(r.val_steps, [2, 5, 8, 11])
    assert r.val_losses.shape == (1, 4)
    # Full-batch: the validation loss after step s is the training loss of step s + 1.
    np.testing.assert_allclose(r.val_losses[0, :3], r.losses[0, [3, 6, 9]], rtol=1e-5)
    batched = run(val_data=[(X[:32], Y[:32]), (X[32:], Y[32:])], val_every=3, **full)
    np.testing.assert_allclose(batched.val_losses, r.val_losses, rtol=1e-5)
    halves = run(val_data=(X, Y), val_every=3, val_batch_size=N // 2, **full)
    np.testing.assert_allclose(halves.val_losses, r.val_losses, rtol=1e-5)


def test_validation_is_nan_after_divergence():
    r = run(val_data=(X, Y), val_every=2, end_lr=1e3)
    d = r.diverged_at[0]
    assert 0 < d < 28
    after = r.val_steps >= d
    assert np.all(np.isnan(r.val_losses[0, after]))
    assert np.all(np.isfinite(r.val_losses[0, ~after]))


def test_progress_bar(capsys):
    pytest.importorskip("tqdm")
    r = run(progress=True, chunk_size=10)
    assert r.strategy == "vmap/chunks"
    assert "range test" in capsys.readouterr().err


def test_model_state_is_threaded():
    def loss_fn(w, count, batch):  # count: a step counter kept as model state
        return mse(w, batch) + 1e-3 * count, count + 1.0

    r = run(loss_fn=loss_fn, state=jnp.float32(0.0), shuffle=False, end_lr=0.3)
    reference = run(shuffle=False, end_lr=0.3)
    np.testing.assert_allclose(r.losses[0] - reference.losses[0], 1e-3 * np.arange(30), atol=1e-5)

    def aux_loss_fn(w, count, batch):
        loss, count = loss_fn(w, count, batch)
        return loss, (count, "ignored")

    r2 = run(loss_fn=aux_loss_fn, state=jnp.float32(0.0), shuffle=False, end_lr=0.3, has_aux=True)
    np.testing.assert_allclose(r2.losses, r.losses, rtol=1e-6)


def test_rng_and_seeds():
    def loss_fn(w, batch, rng):
        return mse(w, batch) * 0.0 + jax.random.uniform(rng)

    kw = dict(loss_fn=loss_fn, takes_rng=True, diverge_threshold=None, num_steps=5)
    shared = run(grid={"weight_decay": [0.0, 0.1]}, **kw)
    np.testing.assert_array_equal(shared.losses[0], shared.losses[1])
    assert len(set(shared.losses[0].tolist())) == 5
    seeded = run(seeds=[0, 1], **kw)
    np.testing.assert_array_equal(seeded.hparams["seed"], [0, 1])
    assert seeded.grid_names == ("seed",)
    assert not np.allclose(seeded.losses[0], seeded.losses[1])


def test_key_forms_agree():
    typed = run(key=jax.random.key(7), num_steps=5)
    for key in (7, jax.random.PRNGKey(7)):
        np.testing.assert_array_equal(run(key=key, num_steps=5).losses, typed.losses)
    assert not np.array_equal(run(key=8, num_steps=5).losses, typed.losses)
    with pytest.raises(TypeError, match="key"):
        run(key="seven")


@pytest.mark.parametrize("enable_x64", [False, True])
def test_int_seeds_give_jax_random_keys(enable_x64, request):
    if enable_x64:
        request.getfixturevalue("x64")
    assert jax.config.jax_enable_x64 == enable_x64
    for seed in (0, 7, 2**31 + 5, 2**32 - 1, 2**32 + 7, 2**40 + 3, 2**63 - 1):
        got = jax.random.key_data(_grid.as_key(seed))
        np.testing.assert_array_equal(got, jax.random.key_data(jax.random.key(seed)))


def test_init_fn_and_per_seed_shuffle():
    def init_fn(key):
        return jax.random.normal(key, (D,))

    r = clrjax.range_test(
        mse, None, (X, Y), seeds=[3, 4], **FAST, model=clrjax.Model(init_fn=init_fn)
    )
    assert r.losses[0, 0] != r.losses[1, 0]
    same_init = run(seeds=[3, 4], shuffle="per_seed")
    assert same_init.losses[0, 0] != same_init.losses[1, 0]
    with pytest.warns(UserWarning, match="seeds change nothing"):
        shared_order = run(seeds=[3, 4])
    np.testing.assert_array_equal(shared_order.losses[0], shared_order.losses[1])


def test_mixed_precision():
    dtypes = []

    def loss_fn(w, batch):
        dtypes.append((w.dtype, batch[0].dtype))
        return mse(w, batch)

    r = run(loss_fn=loss_fn, compute_dtype=jnp.bfloat16, end_lr=0.3, shuffle=False)
    assert set(dtypes) == {(jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.bfloat16))}
    reference = run(end_lr=0.3, shuffle=False)
    assert r.losses.dtype == np.float32
    np.testing.assert_allclose(r.losses, reference.losses, rtol=5e-2, atol=1e-2)


# ------------------------------------------------------------------ flax


def test_flax_linen_and_nnx():
    flax = pytest.importorskip("flax")
    del flax
    from flax import linen, nnx

    model = linen.Dense(1)
    variables = model.init(jax.random.key(0), X[:1])

    def linen_loss(params, batch):
        x, y = batch
        return jnp.mean((model.apply({"params": params}, x)[:, 0] - y) ** 2)

    r = clrjax.range_test(linen_loss, variables["params"], (X, Y), **FAST)
    assert np.all(np.isfinite(r.losses[0, :10]))

    graphdef, nnx_params = nnx.split(nnx.Linear(D, 1, rngs=nnx.Rngs(0)))

    def nnx_loss(params, batch):
        x, y = batch
        module = nnx.merge(graphdef, params)
        return jnp.mean((module(x)[:, 0] - y) ** 2)

    r2 = clrjax.range_test(nnx_loss, nnx_params, (X, Y), **FAST)
    assert np.all(np.isfinite(r2.losses[0, :10]))

    class BNModel(linen.Module):
        @linen.compact
        def __call__(self, x, train):
            x = linen.BatchNorm(use_running_average=not train, momentum=0.5)(x)
            return linen.Dense(1)(x)[:, 0]

    bn = BNModel()
    bn_vars = bn.init(jax.random.key(0), X[:2], train=False)

    def bn_loss(params, state, batch):
        x, y = batch
        pred, updates = bn.apply(
            {"params": params, **state}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.mean((pred - y) ** 2), updates

    stats0 = bn_vars["batch_stats"]
    r3 = clrjax.range_test(
        bn_loss,
        bn_vars["params"],
        (X, Y),
        **FAST,
        model=clrjax.Model(state={"batch_stats": stats0}),
    )
    assert np.all(np.isfinite(r3.losses[0, :10]))
    np.testing.assert_array_equal(stats0["BatchNorm_0"]["mean"], np.zeros(D))

    class NNXModel(nnx.Module):
        def __init__(self, rngs):
            self.bn = nnx.BatchNorm(D, momentum=0.5, rngs=rngs)
            self.linear = nnx.Linear(D, 1, rngs=rngs)

        def __call__(self, x):
            return self.linear(self.bn(x))[:, 0]

    graphdef, nnx_params, nnx_stats = nnx.split(NNXModel(nnx.Rngs(0)), nnx.Param, nnx.BatchStat)

    def nnx_bn_loss(params, stats, batch):
        module = nnx.merge(graphdef, params, stats, copy=True)  # fresh Variables per trace
        loss = jnp.mean((module(batch[0]) - batch[1]) ** 2)
        return loss, nnx.state(module, nnx.BatchStat)

    r4 = clrjax.range_test(
        nnx_bn_loss, nnx_params, (X, Y), **FAST, model=clrjax.Model(state=nnx_stats)
    )
    assert np.all(np.isfinite(r4.losses[0, :10]))
    np.testing.assert_array_equal(nnx_stats["bn"]["mean"][...], np.zeros(D))


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(start_lr=0.0), ValueError, "start_lr"),
        (dict(start_lr=-1.0), ValueError, "start_lr"),
        (dict(start_lr=3.0, end_lr=1.0), ValueError, "start_lr"),
        (dict(num_steps=1), ValueError, "num_steps"),
        (dict(num_steps=2.5), TypeError, "num_steps"),
        (dict(batch_size=N + 1), ValueError, "batch_size"),
        (dict(data=(X, Y[:10])), ValueError, "same number of examples"),
        (dict(grid={"weight_decay": []}), ValueError, "grid"),
        (dict(grid={"learning_rate_typo": [1.0]}), ValueError, "grid"),
        (dict(grid={"seed": [1.0]}), ValueError, "seed"),
        (dict(loss_fn=lambda w, b: (b[0] @ w - b[1]) ** 2), ValueError, "scalar"),
        (dict(ramp="cosine"), ValueError, "ramp"),
        (dict(ramp_convention="keras"), ValueError, "ramp_convention"),
        (dict(smoothing="median"), ValueError, "smoothing"),
        (dict(beta=1.0), ValueError, "beta"),
        (dict(diverge_threshold=1.0), ValueError, "diverge_threshold"),
        (dict(driver="while"), ValueError, "driver"),
        (dict(strategy="pmap"), ValueError, "strategy"),
        (dict(shuffle="per_lane"), ValueError, "shuffle"),
        (dict(accumulation_steps=0), ValueError, "accumulation_steps"),
        (dict(params=None), ValueError, "init_fn"),
        (dict(compute_dtype=jnp.int8), ValueError, "compute_dtype"),
        (dict(shuffle="per_seed"), ValueError, "seeds"),
        (dict(val_data=(X, Y), val_batch_size=N + 1), ValueError, "val_batch_size"),
        (dict(optimizer=optax.adam, grid={"momentum": [0.9]}), ValueError, "momentum"),
        (dict(optimizer=optax.inject_hyperparams(optax.sgd)), ValueError, "inject_hyperparams"),
        (
            dict(
                optimizer=lambda learning_rate: optax.chain(
                    optax.clip_by_global_norm(1.0),
                    clrjax.scheduled(optax.sgd, learning_rate=learning_rate),
                )
            ),
            ValueError,
            "inject_hyperparams",
        ),
        (dict(loss_fn=lambda w, b: (mse(w, b), w)), ValueError, "has_aux=True"),
        (dict(grid={"learning_rate": [0.1]}), ValueError, "start_lr, end_lr"),
        (
            dict(optimizer=optax.sgd, grid={"nesterov": [0, 1], "momentum": [0.9]}),
            ValueError,
            "'nesterov' is a flag",
        ),
        (dict(params=jnp.zeros(D, jnp.int32)), TypeError, "params has dtype int32"),
        (
            dict(params=None, init_fn=lambda k: {"w": jnp.zeros(D), "n": jnp.int32(0)}),
            TypeError,
            "'n'",
        ),
        (dict(data=[X, Y]), TypeError, "pass a tuple such as"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        run(**kwargs)


def test_result_suggest_and_best():
    r = run(grid={"weight_decay": [1e-3, 0.0]}, end_lr=30.0)
    lrs = r.suggest()
    assert lrs.shape == (2,)
    assert np.all((lrs >= r.lrs[0]) & (lrs <= r.lrs[-1]))
    best = r.best()
    minima = np.nanmin(np.where(np.isfinite(r.smoothed), r.smoothed, np.nan), axis=1)
    assert best.index == int(np.nanargmin(minima))
    assert best.lr == pytest.approx(lrs[best.index])
    assert best.hparams == r.lane_hparams(best.index)
    assert list(best.hparams) == list(r.grid_names)


@pytest.mark.parametrize("ramp", ["exp", "linear"])
@pytest.mark.parametrize(("start", "end"), [(1e-5, 1.0), (1e-7, 10.0), (3e-4, 0.7)])
def test_lr_grid_hits_start_and_end_exactly(ramp, start, end):
    r = run(start_lr=jnp.float32(start) if ramp == "exp" else start, end_lr=end, ramp=ramp)
    assert isinstance(r.lrs, np.ndarray) and r.lrs.dtype == np.float64
    assert r.lrs[0] == float(np.float32(start) if ramp == "exp" else start)
    assert r.lrs[-1] == end


# ------------------------------------------------------------- faults


def test_a_stream_with_a_short_first_batch_trains_on_every_batch():
    batches = [(X[i : i + 16], Y[i : i + 16]) for i in range(0, N, 16)]
    reference = run(shuffle=False)
    r = run(data=[(X[:5], Y[:5]), *batches])  # re-iterable: the short batch is dropped
    np.testing.assert_allclose(r.losses, reference.losses, rtol=1e-6, equal_nan=True)
    pulled = []

    def endless():
        yield X[:5], Y[:5]
        while len(pulled) < 10_000:  # a hang becomes a failure
            pulled.append(1)
            yield batches[len(pulled) % 4]

    r = run(data=endless(), num_steps=8)
    assert np.all(np.isfinite(r.losses[0, :4])) and len(pulled) < 100


@pytest.mark.parametrize("seeds", [[2**32], [-1], [0, 2**40]])
def test_seeds_outside_uint32_are_refused(seeds):
    with pytest.raises(ValueError, match=r"seeds must be in \[0, 2\*\*32\)"):
        run(seeds=seeds, takes_rng=True, loss_fn=lambda w, b, k: mse(w, b))


def test_a_state_whose_dtype_changes_is_refused():
    def loss_fn(w, count, batch):
        return mse(w, batch), count + 0.5  # an int32 counter turned float

    with pytest.raises(TypeError, match=r"changed state.*int32\[\] to float32\[\]"):
        run(loss_fn=loss_fn, state=jnp.int32(0))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(end_lr=1e300), ValueError, "end_lr must be between"),
        (dict(start_lr=1e-300), ValueError, "start_lr must be between"),
        (dict(loss_fn=lambda w, b: {"loss": mse(w, b)}), ValueError, "a dict with keys"),
        (dict(loss_fn=lambda w, b: None), ValueError, "got None"),
        (dict(optimizer=lambda learning_rate: None), TypeError, "returned None"),
        (dict(max_memory="1GB"), TypeError, "max_memory"),
        (dict(compute_dtype="nonsense"), TypeError, "compute_dtype"),
        (dict(val_data=(X[:, :2], Y)), ValueError, r"val_data\[0\] has per-example shape"),
        (dict(val_data=(X[:0], Y[:0])), ValueError, "val_data must contain at least one"),
        (dict(val_data=[]), ValueError, "val_data must contain at least one"),
        (dict(num_steps=10**10), MemoryError, "num_steps=10000000000"),
        (dict(max_memory=1e3, grid={"momentum": [0.1] * 16}), MemoryError, "max_memory"),
    ],
)
def test_faults_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        run(**kwargs)


def test_the_program_cache_keeps_no_function_alive_for_long():
    import gc
    import weakref

    from clrjax._engine import program

    alive = []
    for i in range(program.PROGRAM_CACHE_SIZE + 4):
        loss_fn = lambda w, b, i=i: mse(w, b) + 0.0 * i  # a new function every call
        alive.append(weakref.ref(loss_fn))
        run(loss_fn=loss_fn, num_steps=3)
        del loss_fn
    gc.collect()
    assert sum(ref() is not None for ref in alive) <= program.PROGRAM_CACHE_SIZE
    assert alive[0]() is None


# ------------------------------------------------------------- rebound


def test_a_classifier_collapsing_to_chance_is_flagged_by_the_rebound_rule():
    # Logistic regression on separable digits with plain SGD: the loss falls from
    # ln 10, then at large learning rates the logits saturate and the loss climbs back
    # towards chance without ever reaching 4x its minimum.
    from clrjax import demo

    data = demo.load_dataset("digits")

    def loss_fn(w, batch):
        x, y = batch
        logits = jnp.clip(x @ w, -5.0, 5.0)  # bounded logits: the loss cannot explode
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    kw = dict(batch_size=64, num_steps=100, start_lr=1e-4, end_lr=1e3, optimizer=optax.sgd)
    w0 = jnp.zeros((64, 10))
    plain = clrjax.range_test(
        loss_fn, w0, (data.x_train, data.y_train), **kw, curve=clrjax.Curve(diverge_rebound=None)
    )
    ruled = clrjax.range_test(loss_fn, w0, (data.x_train, data.y_train), **kw)
    assert plain.diverged_at[0] == -1  # the 4x rule never fires: bounded loss
    d = int(ruled.diverged_at[0])
    smoothed = plain.smoothed[0]
    low = int(np.nanargmin(smoothed))
    start = plain.losses[0, :10].mean()
    fall = start - smoothed[: d + 1].min()
    assert low < d < 99
    assert fall > 0.2 * start and smoothed[d] - smoothed[: d + 1].min() > 0.5 * fall
    previous = smoothed[:d].min()
    assert (
        smoothed[d - 1] - previous <= 0.5 * (start - previous) + 1e-6
    )  # flagged at the first step


def test_the_rebound_rule_waits_for_the_start_level_and_a_real_fall():
    # A flat, noisy loss never falls 20% below its start: never flagged.
    def noise(w, batch, key):
        return mse(w, batch) * 0.0 + 1.0 + 0.3 * jax.random.uniform(key)

    r = run(
        loss_fn=noise, takes_rng=True, diverge_rebound=0.5, diverge_threshold=None, num_steps=60
    )
    assert r.diverged_at[0] == -1


def test_a_loss_fn_without_its_aux_is_refused():
    with pytest.raises(ValueError, match=r"loss_fn must return \(loss, aux\), got"):
        run(has_aux=True)


def test_a_grid_name_that_is_not_a_string_is_refused():
    with pytest.raises(TypeError, match="grid names must be strings, got 1"):
        run(grid={1: [0.1]})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(grid={"seed": [1.0]}), ValueError, "grid name 'seed' is reserved; pass seeds="),
        (dict(key=-1), ValueError, r"key must be a non-negative int seed below 2\*\*63, got -1"),
        (dict(key=2**63), ValueError, r"key must be a non-negative int seed below 2\*\*63"),
        (dict(key=jax.random.split(jax.random.key(0))), ValueError, r"single PRNG key, got shape"),
    ],
)
def test_the_seed_grid_name_and_bad_keys_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        run(**kwargs)


def test_an_optimizer_that_is_neither_factory_nor_transformation_is_named():
    with pytest.raises(TypeError, match=r"or an optax\.inject_hyperparams optimizer, got 'sgd'"):
        run(optimizer="sgd")


def test_a_loss_fn_that_is_not_callable_is_named():
    with pytest.raises(TypeError, match="loss_fn must be callable, got 'loss'"):
        run(loss_fn="loss")
