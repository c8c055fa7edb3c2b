"""Offline demo datasets and a small MLP, used by the command line and examples.

Nothing in the library core imports this module. Datasets are generated or
loaded locally (never downloaded): scikit-learn's bundled ``load_digits`` and
``mnist1d`` generated with ``make_dataset(get_dataset_args())``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DATASETS = ("digits", "mnist1d")


class Dataset(NamedTuple):
    """A classification dataset split into train and test arrays (float32 / int32)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0) + 1e-6
    return (
        ((x_train - mean) / std).astype(np.float32),
        ((x_test - mean) / std).astype(np.float32),
    )


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), standardised, split by ``seed``."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits demo needs scikit-learn: pip install 'clrjax[examples]'"
        ) from e
    bunch = sk_load_digits()
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    x_train, x_test = _standardise(x[train], x[test])
    return Dataset(x_train, y[train], x_test, y[test], 10)


def load_mnist1d(seed: int = 0) -> Dataset:
    """``mnist1d``: 4,000 train / 1,000 test sequences of length 40, generated locally.

    Generating takes seconds; each ``seed``'s arrays are generated once per
    process and every call returns fresh copies of them.
    """
    return Dataset(*(np.copy(a) for a in _mnist1d(seed)[:4]), 10)


@functools.lru_cache(maxsize=2)
def _mnist1d(seed: int) -> tuple[np.ndarray, ...]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the mnist1d demo needs mnist1d: pip install 'clrjax[examples]'") from e
    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    x_train, x_test = _standardise(data["x"], data["x_test"])
    return x_train, data["y"].astype(np.int32), x_test, data["y_test"].astype(np.int32)


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """Loads one of :data:`DATASETS` by name."""
    if name == "digits":
        return load_digits(seed=seed)
    if name == "mnist1d":
        return load_mnist1d(seed=seed)
    raise ValueError(f"dataset must be one of {DATASETS}; got {name!r}")


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
    """He-initialised MLP parameters for layer widths ``sizes`` (input first, classes last)."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "w": jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in),
            "b": jnp.zeros((n_out,)),
        }
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp_apply(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    """Logits of the ReLU MLP built by :func:`init_mlp`."""
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def mlp_loss(params: list[dict[str, jax.Array]], batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Mean softmax cross-entropy of the MLP on a batch ``(x, y)``."""
    x, y = batch
    logits = mlp_apply(params, x)
    return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def mlp_accuracy(
    params: list[dict[str, jax.Array]], batch: tuple[jax.Array, jax.Array]
) -> jax.Array:
    """Fraction of a batch ``(x, y)`` classified right (``find_schedule``'s ``val_metric``)."""
    x, y = batch
    return jnp.mean(jnp.argmax(mlp_apply(params, x), axis=-1) == y)
