"""Workloads shared by the benchmarks: data, pure-JAX models and their torch twins.

Each :class:`Workload` bundles a loss ``loss_fn(params, (x, y)) -> scalar``,
initial parameters, a training set, the forward FLOP count per example
(multiply-add = 2 FLOPs) and, when torch is importable, a factory for an
equivalent ``torch.nn.Module`` (same layer shapes, same loss) so the
torch-lr-finder baseline does the same work.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

WORKLOADS = ("logreg", "mlp64", "mlp512", "cnn", "cifar_cnn")


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark workload."""

    name: str
    description: str
    loss_fn: Callable
    params: object
    x: np.ndarray  # training inputs, (n, ...) float32 (NHWC for images)
    y: np.ndarray  # labels, (n,) int32
    flops_per_example: float  # forward + backward FLOPs of one example
    torch_model: Callable[[], object] | None  # builds the equivalent torch module


def _xent(logits: jax.Array, y: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def _dense_init(key: jax.Array, n_in: int, n_out: int) -> dict[str, jax.Array]:
    return {
        "w": jax.random.normal(key, (n_in, n_out)) * math.sqrt(2.0 / n_in),
        "b": jnp.zeros((n_out,)),
    }


def _mlp_loss(params, batch):
    x, y = batch
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return _xent(x @ params[-1]["w"] + params[-1]["b"], y)


def _dense_flops(sizes: tuple[int, ...]) -> float:
    """Training FLOPs per example: forward, weight gradient, input gradient (not the first)."""
    total = 0.0
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        total += 2 * n_in * n_out * (2 if i == 0 else 3)
    return total


def _torch_mlp(sizes: tuple[int, ...]) -> Callable[[], object]:
    def build():
        import torch

        layers = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(torch.nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers)

    return build


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


def _cnn_init(key: jax.Array, in_channels: int, channels: tuple[int, ...], classes: int):
    keys = jax.random.split(key, len(channels) + 1)
    convs = []
    c_in = in_channels
    for k, c_out in zip(keys[:-1], channels, strict=True):
        w = jax.random.normal(k, (3, 3, c_in, c_out)) * math.sqrt(2.0 / (9 * c_in))
        convs.append({"w": w, "b": jnp.zeros((c_out,))})
        c_in = c_out
    return convs, _dense_init(keys[-1], c_in, classes)


def _cnn_flops(side: int, in_channels: int, channels: tuple[int, ...], classes: int) -> float:
    total, c_in = 0.0, in_channels
    for i, c_out in enumerate(channels):
        fwd = 2 * side * side * 9 * c_in * c_out
        total += fwd * (2 if i == 0 else 3)
        c_in = c_out
        if i < len(channels) - 1:
            side //= 2
    return total + 2 * c_in * classes * 3


def _torch_cnn(in_channels: int, channels: tuple[int, ...], classes: int):
    def build():
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                c_in, self.convs = in_channels, torch.nn.ModuleList()
                for c_out in channels:
                    self.convs.append(torch.nn.Conv2d(c_in, c_out, 3, padding=1))
                    c_in = c_out
                self.head = torch.nn.Linear(c_in, classes)

            def forward(self, x):
                x = x.permute(0, 3, 1, 2)  # NHWC data, as in JAX
                for i, conv in enumerate(self.convs):
                    x = torch.relu(conv(x))
                    if i < len(self.convs) - 1:
                        x = torch.nn.functional.avg_pool2d(x, 2)
                return self.head(x.mean(dim=(2, 3)))

        return Net()

    return build


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float32)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    return x.astype(np.float32), bunch.target.astype(np.int32)


def make_workload(name: str, seed: int = 0) -> Workload:
    """Builds the workload ``name`` (one of :data:`WORKLOADS`)."""
    key = jax.random.PRNGKey(seed)
    if name == "cifar_cnn":
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((2048, 32, 32, 3), dtype=np.float32)
        y = rng.integers(0, 10, size=2048).astype(np.int32)
        channels = (32, 64, 128)
        return Workload(
            name,
            "CNN 3x3 convs 32/64/128 (avg-pool between) on random 32x32x3 (CIFAR-shaped)",
            _cnn_loss,
            _cnn_init(key, 3, channels, 10),
            x,
            y,
            _cnn_flops(32, 3, channels, 10),
            _torch_cnn(3, channels, 10),
        )
    x, y = _digits()
    if name == "cnn":
        channels = (32, 64, 128)
        return Workload(
            name,
            "CNN 3x3 convs 32/64/128 (avg-pool between) on 8x8 digits",
            _cnn_loss,
            _cnn_init(key, 1, channels, 10),
            x.reshape(-1, 8, 8, 1),
            y,
            _cnn_flops(8, 1, channels, 10),
            _torch_cnn(1, channels, 10),
        )
    sizes = {"logreg": (64, 10), "mlp64": (64, 64, 64, 10), "mlp512": (64, 512, 512, 10)}[name]
    keys = jax.random.split(key, len(sizes) - 1)
    params = [_dense_init(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)]
    label = "logistic regression" if name == "logreg" else "MLP " + "-".join(map(str, sizes))
    return Workload(
        name,
        f"{label} on digits",
        _mlp_loss,
        params,
        x,
        y,
        _dense_flops(sizes),
        _torch_mlp(sizes),
    )


def make_batches(workload: Workload, num_steps: int, batch_size: int, seed: int = 0):
    """``(x, y)`` with a leading step axis: shuffled epochs, incomplete batches dropped."""
    rng = np.random.default_rng(seed)
    n = len(workload.x)
    per_epoch = n // batch_size
    order = np.concatenate(
        [rng.permutation(n)[: per_epoch * batch_size] for _ in range(-(-num_steps // per_epoch))]
    )[: num_steps * batch_size].reshape(num_steps, batch_size)
    return workload.x[order], workload.y[order]
