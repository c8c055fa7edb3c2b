"""The benchmarks' pure-JAX models on the data of ``_data.py``.

Each :class:`Workload` adds to its :class:`~_data.Data` a loss
``loss_fn(params, (x, y)) -> scalar`` and initial parameters; the torch twin
(``torch_model``) has the same layer shapes and loss, so the torch-lr-finder
baseline does the same work. Parameters are drawn with NumPy (He normal, zero
biases): eager ``jax.random`` calls would each compile a small program, seconds
of a cold run that belong to neither row.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from _data import CNN_CHANNELS, MLP_SIZES, Data, load


@dataclasses.dataclass(frozen=True)
class Workload(Data):
    """A :class:`~_data.Data` with its JAX loss and initial parameters."""

    loss_fn: Callable
    params: object


def _xent(logits: jax.Array, y: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def _he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def _dense_init(rng: np.random.Generator, n_in: int, n_out: int) -> dict[str, np.ndarray]:
    return {"w": _he_normal(rng, (n_in, n_out), n_in), "b": np.zeros(n_out, np.float32)}


def _mlp_loss(params, batch):
    x, y = batch
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return _xent(x @ params[-1]["w"] + params[-1]["b"], y)


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _pool(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _cnn_loss(params, batch):
    """conv-relu-pool, conv-relu-pool, conv-relu, global average, dense."""
    x, y = batch
    convs, head = params
    for i, layer in enumerate(convs):
        x = jax.nn.relu(_conv(x, layer["w"]) + layer["b"])
        if i < len(convs) - 1:
            x = _pool(x)
    x = x.mean(axis=(1, 2))
    return _xent(x @ head["w"] + head["b"], y)


def _cnn_init(rng: np.random.Generator, in_channels: int, channels: tuple[int, ...], classes: int):
    convs = []
    c_in = in_channels
    for c_out in channels:
        w = _he_normal(rng, (3, 3, c_in, c_out), 9 * c_in)
        convs.append({"w": w, "b": np.zeros(c_out, np.float32)})
        c_in = c_out
    return convs, _dense_init(rng, c_in, classes)


def make_workload(name: str, seed: int = 0) -> Workload:
    """Builds the workload ``name`` (one of ``_data.WORKLOADS``)."""
    data = load(name, seed)
    rng = np.random.default_rng(seed)
    if name in ("cnn", "cifar_cnn"):
        params = _cnn_init(rng, data.x.shape[-1], CNN_CHANNELS, 10)
        return Workload(**vars(data), loss_fn=_cnn_loss, params=params)
    sizes = MLP_SIZES[name]
    params = [_dense_init(rng, a, b) for a, b in itertools.pairwise(sizes)]
    return Workload(**vars(data), loss_fn=_mlp_loss, params=params)
