"""The comparison's statistics: paired differences over seeds, the
:data:`SE_RULE` verdict on them, and epochs to reach a target accuracy."""

from __future__ import annotations

import numpy as np

SE_RULE = 2.0  # a paired difference is real when its mean exceeds this many standard errors


def epochs_to_reach(acc: np.ndarray, target: np.ndarray) -> np.ndarray:
    """First 1-based epoch at which ``acc[..., epoch] >= target``, or -1 for never.

    Args:
      acc: accuracies with epochs on the last axis.
      target: thresholds broadcastable against ``acc[..., 0]``.

    Returns:
      Integer array of shape ``acc.shape[:-1]``.

    Examples:
      >>> acc = np.array([[0.5, 0.8, 0.9], [0.1, 0.2, 0.3]])
      >>> print(epochs_to_reach(acc, np.array([0.8, 0.8])).tolist())
      [2, -1]
    """
    acc = np.asarray(acc)
    reached = acc >= np.asarray(target)[..., None]
    return np.where(reached.any(axis=-1), reached.argmax(axis=-1) + 1, -1)


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the per-seed differences ``a - b``.

    Examples:
      >>> print(paired(np.array([3.0, 4.0, 5.0]), np.array([1.0, 1.0, 1.0])))
      (3.0, 0.5773502691896258)
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    se = float(np.std(d, ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(np.mean(d)), se


def holds(mean: float, se: float) -> bool | None:
    """True / False when ``mean`` is above / below ``SE_RULE`` standard errors, else None.

    Examples:
      >>> print(holds(1.0, 0.2), holds(-1.0, 0.2), holds(0.3, 0.2), holds(1.0, float("nan")))
      True False None None
    """
    if not np.isfinite(se):
        return None
    if mean > SE_RULE * se:
        return True
    if mean < -SE_RULE * se:
        return False
    return None


def outcome(mean: float, se: float, better: str = "better", worse: str = "worse") -> str:
    """``better``, ``worse`` or ``"no clear difference"``: a paired difference by :func:`holds`."""
    return {True: better, False: worse, None: "no clear difference"}[holds(mean, se)]
