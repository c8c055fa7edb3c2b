"""clrjax.pytorch_sgd against a NumPy transcription of torch.optim.SGD's update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clrjax

STEPS = 5
P0 = np.array([1.0, -2.0, 0.5], np.float32)


def _grad(p):
    """The gradient of the loss ``sum(p**4) / 4 + sum(p)``: non-linear, so steps matter."""
    return p**3 + 1.0


def _torch_sgd(lr, momentum, weight_decay, steps=STEPS):
    """torch.optim.SGD (dampening 0, no Nesterov) in float64: d = g + wd p, b = mu b + d."""
    p, buf = P0.astype(np.float64), None
    for _ in range(steps):
        d = _grad(p) + weight_decay * p
        buf = d if buf is None else momentum * buf + d
        p = p - lr * buf
    return p


def _run(lr, momentum, weight_decay, steps=STEPS):
    tx = clrjax.pytorch_sgd(lr, momentum=momentum, weight_decay=weight_decay)
    p = jnp.asarray(P0)
    state = tx.init(p)
    for _ in range(steps):
        updates, state = tx.update(_grad(p), state, p)
        p = optax.apply_updates(p, updates)
    return p


@pytest.mark.parametrize(
    "lr, momentum, weight_decay", [(0.1, 0.9, 0.0), (0.05, 0.0, 0.5), (0.02, 0.5, 0.1)]
)
def test_matches_torch_sgd(lr, momentum, weight_decay):
    np.testing.assert_allclose(
        _run(lr, momentum, weight_decay), _torch_sgd(lr, momentum, weight_decay), rtol=1e-5
    )


def test_jit_matches_eager():
    eager = _run(0.02, 0.5, 0.1)
    np.testing.assert_allclose(jax.jit(_run)(0.02, 0.5, 0.1), eager, rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_vmap_over_each_argument(axis):
    values = [np.array([0.01, 0.05]), np.array([0.0, 0.9]), np.array([0.0, 0.3])]
    fixed = [0.02, 0.5, 0.1]
    args = [values[i] if i == axis else fixed[i] for i in range(3)]
    in_axes = tuple(0 if i == axis else None for i in range(3))
    batched = jax.jit(jax.vmap(_run, in_axes=in_axes))(*args)
    for lane in range(2):
        point = [values[i][lane] if i == axis else fixed[i] for i in range(3)]
        np.testing.assert_allclose(batched[lane], _torch_sgd(*point), rtol=1e-5)
