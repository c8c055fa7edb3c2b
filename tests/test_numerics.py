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
