"""Tests for clrjax._numerics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clrjax import _numerics as num


@pytest.mark.parametrize(
    "value", [3, np.int64(3), np.int32(3), jnp.int32(3), 3.0, np.array([1, 2, 3])]
)
def test_as_float_dtype(value):
    out = num.as_float(value)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, np.asarray(value, dtype=np.float32))


def test_as_float_huge_int_does_not_overflow():
    assert float(num.as_float(2**40)) == 2.0**40
    assert float(num.as_float(np.int64(2**40))) == 2.0**40


def test_as_float_x64(x64):
    assert num.as_float(2**53).dtype == jnp.float64
    assert float(num.as_float(2**53)) == 2.0**53


def test_safe_div_value_and_gradient():
    assert float(num.safe_div(6.0, 3.0)) == 2.0
    assert float(num.safe_div(6.0, 0.0, fallback=-1.0)) == -1.0
    grad = jax.grad(lambda d: num.safe_div(1.0, d))(0.0)
    assert np.isfinite(grad)


def test_is_concrete():
    assert num.is_concrete(1.0)
    assert num.is_concrete(jnp.ones(3))
    seen = []
    jax.jit(lambda x: seen.append(num.is_concrete(x)) or x)(1.0)
    assert seen == [False]


@pytest.mark.parametrize(
    ("check", "bad"),
    [
        (num.check_positive, 0.0),
        (num.check_positive, -1),
        (num.check_positive, np.array([1.0, 0.0])),
        (num.check_non_negative, -1e-9),
        (lambda name, v: num.check_at_most(name, v, 1.0), 1.5),
        (num.check_number, float("nan")),
        (num.check_number, float("inf")),
    ],
)
def test_checks_reject_bad_values(check, bad):
    with pytest.raises(ValueError, match="my_arg"):
        check("my_arg", bad)


def test_check_number_rejects_non_numbers():
    with pytest.raises(TypeError, match="my_arg"):
        num.check_number("my_arg", "0.1")
    with pytest.raises(TypeError, match="my_arg"):
        num.check_number("my_arg", None)


def test_check_open_interval():
    num.check_open_interval("pct_start", 0.5, 0.0, 1.0)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"pct_start must be in \(0.0, 1.0\)"):
            num.check_open_interval("pct_start", bad, 0.0, 1.0)


def test_check_choice():
    num.check_choice("mode", "a", ("a", "b"))
    with pytest.raises(ValueError, match="mode must be one of 'a', 'b'; got 'c'"):
        num.check_choice("mode", "c", ("a", "b"))


def test_checks_accept_tracers():
    @jax.jit
    def f(x):
        num.check_positive("x", x)
        num.check_open_interval("x", x, 0.0, 1.0)
        return x

    assert float(f(-1.0)) == -1.0


HUGE = 2**31 + 3  # float32 rounds it to 2**31


@pytest.mark.parametrize("step", [HUGE, np.int64(HUGE), np.float64(HUGE), np.array([HUGE, 5])])
def test_split_step_host_values_are_exact(step):
    split = num.split_step(step)
    assert split.whole.dtype == split.part.dtype == jnp.float32
    whole = np.asarray(split.whole, dtype=np.int64)
    part = np.asarray(split.part, dtype=np.int64)
    np.testing.assert_array_equal(whole + part, np.asarray(step, dtype=np.int64))
    assert np.all(whole % 2**24 == 0) and np.all(part < 2**24)


def test_split_step_traced_int32_is_exact():
    @jax.jit
    def parts(step):
        split = num.split_step(step)
        return split.whole, split.part

    steps = jnp.asarray([2**31 - 1, 2**24 + 1, 7, -4], dtype=jnp.int32)
    whole, part = (np.asarray(p, dtype=np.int64) for p in parts(steps))
    np.testing.assert_array_equal(whole + part, [2**31 - 1, 2**24 + 1, 7, 0])


def test_split_step_small_ints_floats_and_negatives():
    np.testing.assert_array_equal(num.split_step(jnp.asarray([3, -2], jnp.int8)).value(), [3, 0])
    split = num.split_step(jnp.asarray([2.5, -1.0]))
    np.testing.assert_array_equal(split.whole, [2.5, 0.0])
    np.testing.assert_array_equal(split.part, [0.0, 0.0])
    assert float(num.split_step(2**70).value()) == 2.0**70


@pytest.mark.parametrize("period", [4000.0, 7.0, 2.5, 14.0])
def test_cycle_position_is_exact_for_huge_steps(period):
    steps = [HUGE, 2**40 + 11, 2**31 - 1, 3 * 2**24 + 5]
    cycles, offset = num.cycle_position(num.split_step(np.array(steps)), period)
    want_cycles, want_offset = np.divmod(np.array(steps, dtype=np.float64), period)  # exact
    np.testing.assert_array_equal(offset, want_offset)
    np.testing.assert_allclose(cycles, want_cycles, rtol=1e-7)


def test_cycle_position_under_jit_and_its_gradient():
    def offset(period, step):
        return num.cycle_position(num.split_step(step), period)[1]

    got = jax.jit(offset)(4000.0, jnp.asarray(2**31 - 1, jnp.int32))
    assert float(got) == (2**31 - 1) % 4000
    assert float(jax.grad(offset)(7.0, 100)) == -14.0  # 100 - 14 * period


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(value=1e39), r"x must be at most 3.403e\+38 in magnitude \(float32\), got 1e\+39"),
        (dict(value=-1e39), "at most"),
        (dict(value=1e-40, positive=True), r"x must be >= 1.175e-38 .*float32\), got 1e-40"),
        (dict(value=0.0, positive=True), "x must be > 0"),
    ],
)
def test_check_float_rejects_values_float32_cannot_hold(kwargs, match):
    with pytest.raises(ValueError, match=match):
        num.check_float("x", **kwargs)


def test_check_float_accepts():
    num.check_float("x", 1e-40)  # flushed to 0: harmless where it is not a divisor
    num.check_float("x", 3e38, positive=True)
    jax.jit(lambda v: num.check_float("x", v, positive=True) or v)(0.0)


def test_check_float_x64(x64):
    num.check_float("x", 1e39)
    num.check_float("x", 1e-40, positive=True)


def test_an_init_fn_that_is_not_callable_is_named():
    with pytest.raises(TypeError, match="init_fn must be callable, got 'init'"):
        num.checked_init("init")
