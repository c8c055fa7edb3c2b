"""Tests for clrjax._optax_glue (clrjax.scheduled)."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax

GOLDEN = pathlib.Path(__file__).parent / "data" / "sgd_one_cycle_trajectory.json"


def _lr(t):
    return 0.1 / (1.0 + t)


def _mom(t):
    return 0.8 + 0.1 * jnp.sin(t)


def _grad(t):
    """A deterministic, step-dependent gradient for reference recurrences."""
    return np.array([1.0, -2.0, 0.5]) * np.cos(0.7 * t) + 0.3


def _hyperparam(state, name):
    """Finds hyperparameter ``name`` anywhere in a (chained) state, as documented."""
    return optax.tree.get(state, name, filtering=lambda _, value: isinstance(value, jax.Array))


def _run(opt, params, num_steps, pass_params=True):
    """Applies ``num_steps`` updates with the gradients ``_grad(t)``; returns params, states."""
    state = opt.init(params)
    states = [state]
    for t in range(num_steps):
        grads = jnp.asarray(_grad(t), params.dtype)
        updates, state = opt.update(grads, state, params if pass_params else None)
        params = optax.apply_updates(params, updates)
        states.append(state)
    return params, states


# --- step convention and semantics -------------------------------------------------


def test_update_t_uses_schedule_of_t():
    opt = clrjax.scheduled(optax.sgd, learning_rate=lambda t: 0.5 + t)
    params = jnp.zeros(3)
    state = opt.init(params)
    assert float(state.hyperparams["learning_rate"]) == 0.5  # schedule(0) after init
    for t in range(4):
        grads = jnp.asarray(_grad(t), jnp.float32)
        updates, state = opt.update(grads, state, params)
        np.testing.assert_allclose(updates, -(0.5 + t) * _grad(t), rtol=1e-6)
        # hyperparams report the value the latest update used
        assert float(state.hyperparams["learning_rate"]) == 0.5 + t


@pytest.mark.parametrize("nesterov", [False, True])
def test_scheduled_lr_and_momentum_match_numpy_recurrence(nesterov):
    # PyTorch SGD form: buf = mu_t * buf + g_t (buf_0 = 0); step = g_t + mu_t * buf (Nesterov)
    # or buf; p -= lr_t * step.
    opt = clrjax.scheduled(optax.sgd, learning_rate=_lr, momentum=_mom, nesterov=nesterov)
    params, _ = _run(opt, jnp.zeros(3), 6)
    p, buf = np.zeros(3), np.zeros(3)
    for t in range(6):
        g, mu = _grad(t), 0.8 + 0.1 * np.sin(t)
        buf = mu * buf + g
        p = p - _lr(t) * (g + mu * buf if nesterov else buf)
    np.testing.assert_allclose(params, p, rtol=1e-5)


def test_matches_rebuilding_the_optimizer_every_step():
    # Adam with a scheduled b1 and AdamW-style scheduled weight decay equal rebuilding
    # optax.adamw(...) with that step's values while carrying its state.
    b1 = lambda t: 0.9 - 0.05 * (t % 3)
    wd = lambda t: 0.01 * (1.0 + t)
    opt = clrjax.scheduled(optax.adamw, learning_rate=_lr, b1=b1, weight_decay=wd)
    params, states = _run(opt, jnp.ones(3), 5)
    ref_params = jnp.ones(3)
    ref_state = optax.adamw(0.1).init(ref_params)
    for t in range(5):
        ref = optax.adamw(_lr(t), b1=b1(t), weight_decay=wd(t))
        updates, ref_state = ref.update(jnp.asarray(_grad(t), jnp.float32), ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, updates)
        assert float(states[t + 1].hyperparams["b1"]) == pytest.approx(b1(t))
    np.testing.assert_allclose(params, ref_params, rtol=1e-5)


def test_momentum_schedule_builds_the_trace_and_none_does_not():
    params = jnp.zeros(3)
    with_schedule = clrjax.scheduled(optax.sgd, learning_rate=0.1, momentum=_mom).init(params)
    without = clrjax.scheduled(optax.sgd, learning_rate=0.1).init(params)
    assert isinstance(with_schedule.inner_state[0], optax.TraceState)
    assert "momentum" in with_schedule.hyperparams
    assert not isinstance(without.inner_state[0], optax.TraceState)
    assert "momentum" not in without.hyperparams


def test_momentum_zero_has_a_buffer_but_matches_no_momentum():
    zero = clrjax.scheduled(optax.sgd, learning_rate=_lr, momentum=0.0)
    assert isinstance(zero.init(jnp.zeros(3)).inner_state[0], optax.TraceState)
    p_zero, _ = _run(zero, jnp.zeros(3), 4)
    p_none, _ = _run(clrjax.scheduled(optax.sgd, learning_rate=_lr), jnp.zeros(3), 4)
    np.testing.assert_allclose(p_zero, p_none, rtol=1e-6)


def test_hyperparams_can_be_overwritten_between_steps():
    opt = clrjax.scheduled(optax.sgd, learning_rate=0.1)
    state = opt.init(jnp.zeros(2))
    state.hyperparams["learning_rate"] = 0.5
    updates, state = opt.update(jnp.ones(2), state)
    np.testing.assert_allclose(updates, [-0.5, -0.5])
    assert state.hyperparams["learning_rate"].dtype == jnp.float32


def test_numpy_scalars_are_hyperparameters():
    opt = clrjax.scheduled(optax.sgd, learning_rate=np.float32(0.25), momentum=np.float64(0.5))
    state = opt.init(jnp.zeros(2))
    assert set(state.hyperparams) == {"learning_rate", "momentum"}
    updates, _ = opt.update(jnp.ones(2), state)
    np.testing.assert_allclose(updates, [-0.25, -0.25])


def test_static_arguments_pass_through():
    # nesterov (bool), accumulator_dtype (a callable type) and adamw's mask (a callable
    # that is not a schedule) are all static.
    sgd = clrjax.scheduled(
        optax.sgd, learning_rate=0.1, momentum=0.9, nesterov=True, accumulator_dtype=jnp.float32
    )
    state = sgd.init(jnp.zeros(2))
    assert set(state.hyperparams) == {"learning_rate", "momentum"}
    mask = lambda params: {"w": True, "b": False}
    adamw = clrjax.scheduled(optax.adamw, learning_rate=0.1, weight_decay=0.5, mask=mask)
    params = {"w": jnp.ones(2), "b": jnp.ones(2)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = adamw.update(zeros, adamw.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.05, -0.05], rtol=1e-6)
    np.testing.assert_allclose(updates["b"], [0.0, 0.0])


def test_static_args_for_a_non_schedule_callable():
    def factory(learning_rate, transform_fn=None):
        return optax.chain(optax.scale(transform_fn(2.0)), optax.scale(-learning_rate))

    opt = clrjax.scheduled(
        factory, static_args="transform_fn", learning_rate=0.5, transform_fn=lambda x: x * 3
    )
    updates, _ = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
    np.testing.assert_allclose(updates, [-3.0, -3.0])


# --- composition and transformations -----------------------------------------------


def test_inside_chain_and_jit_without_retracing():
    traces = []
    opt = optax.chain(
        optax.clip_by_global_norm(1.0),
        clrjax.scheduled(optax.sgd, learning_rate=_lr, momentum=_mom, nesterov=True),
    )

    @jax.jit
    def step(params, state):
        traces.append(None)
        loss, grads = jax.value_and_grad(lambda p: jnp.sum((p - 3.0) ** 2))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    params = jnp.zeros(3)
    state = opt.init(params)
    eager_params, eager_state = params, state
    for t in range(5):
        params, state, _ = step(params, state)
        grads = 2.0 * (eager_params - 3.0)
        updates, eager_state = opt.update(grads, eager_state, eager_params)
        eager_params = optax.apply_updates(eager_params, updates)
        assert float(_hyperparam(state, "learning_rate")) == pytest.approx(_lr(t))
    assert len(traces) == 1
    np.testing.assert_allclose(params, eager_params, rtol=1e-6)


@pytest.mark.usefixtures("x64")
def test_state_type_is_stable_without_params_in_scan():
    # Plain inject_hyperparams casts scheduled values to the default float (here float64)
    # when update() gets no params, changing the carry type; scheduled keeps float32.
    opt = clrjax.scheduled(optax.sgd, learning_rate=_lr, momentum=_mom)
    params = jnp.zeros(3, jnp.float32)
    state = opt.init(params)

    def body(carry, t):
        params, state = carry
        updates, state = opt.update(jnp.ones(3, jnp.float32), state)
        return (optax.apply_updates(params, updates), state), updates.dtype == jnp.float32

    (params, state), _ = jax.lax.scan(body, (params, state), jnp.arange(4))
    assert params.dtype == jnp.float32
    assert {v.dtype for v in state.hyperparams.values()} == {jnp.dtype(jnp.float32)}


def test_bfloat16_params_with_float32_hyperparams():
    params = jnp.ones(3, jnp.bfloat16)
    default = clrjax.scheduled(optax.sgd, learning_rate=_lr, momentum=0.999)
    assert float(default.init(params).hyperparams["momentum"]) == 1.0  # bfloat16 rounding
    opt = clrjax.scheduled(
        optax.sgd,
        learning_rate=_lr,
        momentum=0.999,
        accumulator_dtype=jnp.float32,
        hyperparam_dtype=jnp.float32,
    )
    state = opt.init(params)
    updates, new_state = opt.update(jnp.ones(3, jnp.bfloat16), state)
    assert float(new_state.hyperparams["momentum"]) == pytest.approx(0.999)
    dtypes = lambda tree: jax.tree.map(lambda x: x.dtype, tree)
    assert dtypes(new_state) == dtypes(state)
    assert optax.apply_updates(params, updates).dtype == jnp.bfloat16


def test_vmap_over_constant_learning_rate():
    def train(lr):
        opt = clrjax.scheduled(optax.sgd, learning_rate=lr, momentum=_mom)
        params = jnp.zeros(3)
        state = opt.init(params)
        for t in range(3):
            updates, state = opt.update(jnp.asarray(_grad(t), jnp.float32), state, params)
            params = optax.apply_updates(params, updates)
        return params, state.hyperparams["learning_rate"]

    lrs = jnp.array([0.01, 0.1, 0.3])
    batched, reported = jax.jit(jax.vmap(train))(lrs)
    for i, lr in enumerate(lrs):
        np.testing.assert_allclose(batched[i], train(lr)[0], rtol=1e-6)
    np.testing.assert_allclose(reported, lrs)


# --- errors ----------------------------------------------------------------------------


def test_unknown_name_lists_accepted_parameters():
    with pytest.raises(TypeError, match=r"sgd\(\) has no parameter 'beta1'.*learning_rate, mom"):
        clrjax.scheduled(optax.sgd, learning_rate=0.1, beta1=0.9)
    with pytest.raises(TypeError, match="has no parameter 'nesterovv'"):
        clrjax.scheduled(optax.sgd, learning_rate=0.1, static_args="nesterovv")


def test_missing_required_parameter():
    with pytest.raises(TypeError, match="learning_rate"):
        clrjax.scheduled(optax.sgd, momentum=0.9)


def test_bad_factory_and_values():
    with pytest.raises(TypeError, match="optimizer_factory must be callable"):
        clrjax.scheduled("sgd", learning_rate=0.1)
    with pytest.raises(ValueError, match="momentum must be finite"):
        clrjax.scheduled(optax.sgd, learning_rate=0.1, momentum=float("nan"))


def test_string_where_a_number_belongs_fails_at_build():
    with pytest.raises(TypeError, match=r"learning_rate must be a number, an array or a sch"):
        clrjax.scheduled(optax.sgd, learning_rate="0.1")
    with pytest.raises(TypeError, match="momentum must be"):
        clrjax.scheduled(optax.sgd, learning_rate=0.1, momentum=b"0.9")


def test_strings_pass_where_the_default_is_a_string_or_static():
    opt = clrjax.scheduled(optax.polyak_sgd, max_learning_rate=0.5, variant="sps+")
    assert "variant" not in opt.init(jnp.zeros(2)).hyperparams

    def factory(learning_rate, reduction=None):
        return optax.scale(-learning_rate * {"sum": 2.0, None: 1.0}[reduction])

    opt = clrjax.scheduled(factory, static_args="reduction", learning_rate=0.5, reduction="sum")
    updates, _ = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
    np.testing.assert_allclose(updates, [-1.0, -1.0])


def test_factory_parameter_clashing_with_an_option():
    def factory(learning_rate, hyperparam_dtype=None):
        return optax.sgd(learning_rate)

    with pytest.raises(TypeError, match=r"'hyperparam_dtype'.*reserves"):
        clrjax.scheduled(factory, learning_rate=0.1)


# --- trajectory parity with PyTorch SGD / AdamW + OneCycleLR -------------------------------------


def _golden():
    return json.loads(GOLDEN.read_text())


def _replay(golden, run):
    """Replays a golden PyTorch run with clrjax schedules and optax; returns (w, b) per step."""
    cfg = golden["schedule"]
    shared = {"pct_start": cfg["pct_start"], "anneal_strategy": cfg["anneal_strategy"]}
    lr = clrjax.one_cycle_schedule(
        cfg["total_steps"],
        cfg["max_lr"],
        div_factor=cfg["div_factor"],
        final_div_factor=cfg["final_div_factor"],
        **shared,
    )
    momentum = clrjax.one_cycle_momentum_schedule(
        cfg["total_steps"],
        base_momentum=cfg["base_momentum"],
        max_momentum=cfg["max_momentum"],
        **shared,
    )
    if run["optimizer"] == "adamw":  # torch AdamW: decoupled decay, p *= 1 - lr * wd
        momentum_name = "b1"
        opt = clrjax.scheduled(
            optax.adamw,
            learning_rate=lr,
            b1=momentum,
            b2=run["b2"],
            weight_decay=run["weight_decay"],
        )
    else:  # torch SGD: coupled L2 (wd * p added to the gradient before momentum)
        momentum_name = "momentum"
        opt = optax.chain(
            optax.add_decayed_weights(run["weight_decay"]),
            clrjax.scheduled(
                optax.sgd, learning_rate=lr, momentum=momentum, nesterov=run["nesterov"]
            ),
        )
    dtype = jnp.result_type(float)
    x = jnp.asarray(golden["data"]["x"], dtype)
    y = jnp.asarray(golden["data"]["y"], dtype)
    params = {
        "w": jnp.asarray(golden["data"]["w0"], dtype),
        "b": jnp.asarray(golden["data"]["b0"], dtype),
    }

    @jax.jit
    def step(params, state):
        loss_fn = lambda p: jnp.mean((x @ p["w"] + p["b"] - y) ** 2)
        grads = jax.grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    ws, bs, lrs, moms = [], [], [], []
    for _ in range(cfg["total_steps"]):
        params, state = step(params, state)
        ws.append(params["w"])
        bs.append(params["b"])
        lrs.append(_hyperparam(state, "learning_rate"))
        moms.append(_hyperparam(state, momentum_name))
    return np.array(ws), np.array(bs), np.array(lrs), np.array(moms)


def _check_parity(name, rtol, atol):
    golden = _golden()
    run = golden["runs"][name]
    ws, bs, lrs, moms = _replay(golden, run)
    np.testing.assert_allclose(lrs, run["lrs"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(moms, run["momenta"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(ws, run["w"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(bs, run["b"], rtol=rtol, atol=atol)


RUNS = ["momentum", "nesterov", "weight_decay", "adamw"]


@pytest.mark.parametrize("name", RUNS)
def test_trajectory_matches_torch_one_cycle_float32(name):
    _check_parity(name, rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", RUNS)
def test_trajectory_matches_torch_one_cycle_x64(name):
    _check_parity(name, rtol=1e-9, atol=1e-12)


def test_golden_runs_differ():
    # Guards the parity tests against degenerate goldens: the variants must disagree.
    runs = _golden()["runs"]
    for a, b in [("momentum", "nesterov"), ("momentum", "weight_decay"), ("momentum", "adamw")]:
        assert np.max(np.abs(np.subtract(runs[a]["w"], runs[b]["w"]))) > 1e-2
