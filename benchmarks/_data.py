"""The benchmarks' data, FLOP counts and torch models, with NumPy only.

Kept apart from the JAX models (``_workloads.py``) so that the torch-lr-finder
row of a cold run (a fresh process, see ``bench_range_test.py``) imports torch
and never JAX, as a torch user's script would.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import numpy as np

WORKLOADS = ("logreg", "mlp64", "mlp128", "mlp256", "mlp512", "cnn", "cifar_cnn")
# Dense layer sizes of the MLP workloads (digits: 64 inputs, 10 classes).
MLP_SIZES = {
    "logreg": (64, 10),
    "mlp64": (64, 64, 64, 10),
    "mlp128": (64, 128, 128, 10),
    "mlp256": (64, 256, 256, 10),
    "mlp512": (64, 512, 512, 10),
}
CNN_CHANNELS = (32, 64, 128)
# Every row's task: SGD (momentum 0.9, coupled weight decay) with an exponential LR ramp.
START_LR, END_LR, MOMENTUM = 1e-4, 1.0, 0.9


def weight_decays(num_lanes: int) -> np.ndarray:
    """The K lanes' weight decays: ``geomspace(1e-5, 1e-2, K)`` (``[1e-4]`` for K=1)."""
    return np.geomspace(1e-5, 1e-2, num_lanes) if num_lanes > 1 else np.array([1e-4])


@dataclasses.dataclass(frozen=True)
class Data:
    """One workload's training set and the work of one example.

    Attributes:
      name: the workload's name (one of :data:`WORKLOADS`).
      description: one line for the report.
      x: training inputs, ``(n, ...)`` float32 (NHWC for images).
      y: labels, ``(n,)`` int32.
      flops_per_example: forward + backward matmul/conv FLOPs of one example
        (a multiply-add is 2 FLOPs; the first layer's input gradient is not needed).
      torch_model: builds the equivalent ``torch.nn.Module`` (same layer shapes).
    """

    name: str
    description: str
    x: np.ndarray
    y: np.ndarray
    flops_per_example: float
    torch_model: Callable[[], object]


def dense_flops(sizes: tuple[int, ...]) -> float:
    """Training FLOPs per example: forward, weight gradient, input gradient (not the first)."""
    total = 0.0
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        total += 2 * n_in * n_out * (2 if i == 0 else 3)
    return total


def cnn_flops(side: int, in_channels: int, channels: tuple[int, ...], classes: int) -> float:
    """Training FLOPs per example of :func:`_torch_cnn`'s network (and its JAX twin)."""
    total, c_in = 0.0, in_channels
    for i, c_out in enumerate(channels):
        fwd = 2 * side * side * 9 * c_in * c_out
        total += fwd * (2 if i == 0 else 3)
        c_in = c_out
        if i < len(channels) - 1:
            side //= 2
    return total + 2 * c_in * classes * 3


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


def load(name: str, seed: int = 0) -> Data:
    """The data of workload ``name`` (one of :data:`WORKLOADS`)."""
    if name == "cifar_cnn":
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((2048, 32, 32, 3), dtype=np.float32)
        y = rng.integers(0, 10, size=2048).astype(np.int32)
        return Data(
            name,
            "CNN 3x3 convs 32/64/128 (avg-pool between) on random 32x32x3 (CIFAR-shaped)",
            x,
            y,
            cnn_flops(32, 3, CNN_CHANNELS, 10),
            _torch_cnn(3, CNN_CHANNELS, 10),
        )
    x, y = _digits()
    if name == "cnn":
        return Data(
            name,
            "CNN 3x3 convs 32/64/128 (avg-pool between) on 8x8 digits",
            x.reshape(-1, 8, 8, 1),
            y,
            cnn_flops(8, 1, CNN_CHANNELS, 10),
            _torch_cnn(1, CNN_CHANNELS, 10),
        )
    if name not in MLP_SIZES:
        raise ValueError(f"unknown workload {name!r}; one of {WORKLOADS}")
    sizes = MLP_SIZES[name]
    label = "logistic regression" if name == "logreg" else "MLP " + "-".join(map(str, sizes))
    return Data(name, f"{label} on digits", x, y, dense_flops(sizes), _torch_mlp(sizes))


def make_batches(data: Data, num_steps: int, batch_size: int, seed: int = 0):
    """``(x, y)`` with a leading step axis: shuffled epochs, incomplete batches dropped."""
    rng = np.random.default_rng(seed)
    n = len(data.x)
    per_epoch = n // batch_size
    order = np.concatenate(
        [rng.permutation(n)[: per_epoch * batch_size] for _ in range(-(-num_steps // per_epoch))]
    )[: num_steps * batch_size].reshape(num_steps, batch_size)
    return data.x[order], data.y[order]
