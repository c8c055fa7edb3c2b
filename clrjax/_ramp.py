"""The range test's learning-rate ramp: one learning rate per step, shared by all lanes."""

from __future__ import annotations

from typing import Any

import numpy as np

from clrjax import _numerics as num

RAMPS = ("exp", "linear")
RAMP_CONVENTIONS = ("torch", "fastai")


def lr_ramp(
    start_lr: float, end_lr: float, num_steps: int, ramp: str = "exp", convention: str = "torch"
) -> np.ndarray:
    r"""Learning rate of each step of the range test.

    With :math:`N` steps and position :math:`r_i` (``convention="torch"``:
    :math:`r_i = i / (N - 1)`, so the last step uses ``end_lr``;
    ``convention="fastai"``: :math:`r_i = i / N`, so ``end_lr`` is never reached):

    * ``ramp="exp"``: :math:`\eta_i = \eta_0 (\eta_{end} / \eta_0)^{r_i}`;
    * ``ramp="linear"``: :math:`\eta_i = \eta_0 + r_i (\eta_{end} - \eta_0)`.

    Examples:
      >>> print(lr_ramp(1e-3, 1.0, 4).round(6).tolist())
      [0.001, 0.01, 0.1, 1.0]
      >>> print(lr_ramp(0.0625, 1.0, 4, ramp="exp", convention="fastai").tolist())
      [0.0625, 0.125, 0.25, 0.5]
    """
    num.check_choice("ramp", ramp, RAMPS)
    num.check_choice("ramp_convention", convention, RAMP_CONVENTIONS)
    check_lr_range(start_lr, end_lr)
    num.check_count("num_steps", num_steps, minimum=2)
    start_lr, end_lr = float(start_lr), float(end_lr)
    denominator = num_steps - 1 if convention == "torch" else num_steps
    r = np.arange(num_steps, dtype=np.float64) / denominator
    if ramp == "exp":
        lrs = start_lr * (end_lr / start_lr) ** r
    else:
        lrs = start_lr + r * (end_lr - start_lr)
    lrs[0] = start_lr
    if convention == "torch":
        lrs[-1] = end_lr  # exact, where the power can land one ulp off
    return lrs


def check_lr_range(start_lr: Any, end_lr: Any) -> None:
    """Raises unless ``0 < start_lr < end_lr``, both normal numbers of JAX's float dtype."""
    finfo = np.finfo(num.float_dtype())
    low, high = float(finfo.smallest_normal), float(finfo.max)
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if np.ndim(value) != 0:
            raise TypeError(f"{name} must be a scalar, got {value!r}")
        num.check_positive(name, value)
        if not low <= float(value) <= high:
            raise ValueError(
                f"{name} must be between {low:.3g} and {high:.3g} (the "
                f"range of {finfo.dtype}, the dtype the lanes compute in), got {value!r}"
            )
    if not float(start_lr) < float(end_lr):
        raise ValueError(f"start_lr must be < end_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}")
