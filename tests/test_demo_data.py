"""Tests for the offline demo datasets and MLP."""

import jax
import numpy as np
import pytest

from clrjax import demo


def test_load_digits_split_and_standardised():
    data = demo.load_digits(seed=0)
    assert data.x_train.shape == (1348, 64) and data.x_test.shape == (449, 64)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
    assert set(np.unique(data.y_train)) == set(range(10))
    again = demo.load_digits(seed=0)
    np.testing.assert_array_equal(data.y_test, again.y_test)


def test_load_dataset_rejects_unknown_name():
    with pytest.raises(ValueError, match="dataset must be one of"):
        demo.load_dataset("cifar")


def test_mlp_loss_and_accuracy():
    params = demo.init_mlp(jax.random.key(0), (64, 32, 10))
    x = np.zeros((5, 64), np.float32)
    y = np.arange(5, dtype=np.int32)
    loss = demo.mlp_loss(params, (x, y))
    np.testing.assert_allclose(loss, np.log(10.0), rtol=1e-6)  # uniform logits
    x = np.random.default_rng(0).normal(size=(50, 64)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 50).astype(np.int32)
    logits = np.asarray(demo.mlp_apply(params, x))
    expected = np.mean(logits.argmax(axis=1) == y)
    assert 0.0 < expected < 1.0  # a mix of right and wrong answers
    assert float(demo.mlp_accuracy(params, (x, y))) == pytest.approx(expected)


def test_load_mnist1d_generates_once_and_returns_copies():
    pytest.importorskip("mnist1d")
    first = demo.load_mnist1d(seed=0)
    assert first.x_train.shape == (4000, 40) and first.x_test.shape == (1000, 40)
    assert first.y_train.dtype == np.int32 and first.num_classes == 10
    expected = first.x_train.copy()
    first.x_train[:] = 0.0  # the caller's arrays are its own
    again = demo.load_mnist1d(seed=0)
    np.testing.assert_array_equal(again.x_train, expected)
    assert again.x_train is not first.x_train
