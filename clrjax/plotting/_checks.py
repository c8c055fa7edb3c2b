"""Checks of the plot functions' arguments: each returns the normalised value
or raises ``ValueError``/``TypeError`` naming the argument."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clrjax._suggest import SUGGESTION_METHODS
from clrjax.plotting._style import _default_label_by, _pyplot

if TYPE_CHECKING:  # pragma: no cover - typing only
    from clrjax._result import RangeTestResult


def _lane_indices(result: RangeTestResult, lanes: Any) -> np.ndarray:
    """Normalises ``lanes`` (None, an int, indices or a boolean mask) to indices."""
    num_lanes = np.shape(result.losses)[0]
    if lanes is None:
        return np.arange(num_lanes)
    idx = np.atleast_1d(np.asarray(lanes))
    if idx.dtype == bool:
        if idx.shape != (num_lanes,):
            raise ValueError(
                f"lanes as a boolean mask must have shape ({num_lanes},); got {idx.shape}"
            )
        return np.flatnonzero(idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"lanes must be lane indices or a boolean mask; got {lanes!r}")
    if idx.size == 0 or np.any((idx < -num_lanes) | (idx >= num_lanes)):
        raise ValueError(f"lanes must be indices in [0, {num_lanes}); got {lanes!r}")
    return idx % num_lanes


def _window(num_steps: int, skip_start: int, skip_end: int) -> slice:
    for name, value in (("skip_start", skip_start), ("skip_end", skip_end)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int; got {value!r}")
    if skip_start + skip_end >= num_steps:
        raise ValueError(
            f"skip_start + skip_end must be < the number of steps ({num_steps}); "
            f"got {skip_start} + {skip_end}"
        )
    return slice(skip_start, num_steps - skip_end)


def _check_suggest(suggest: str | Sequence[str] | None) -> tuple[str, ...]:
    """``suggest`` as a tuple of method names (empty for None)."""
    if suggest is None:
        return ()
    if not isinstance(suggest, (str, Iterable)):
        raise TypeError(
            f"suggest must be a method name, a sequence of them or None; got {suggest!r}"
        )
    methods = (suggest,) if isinstance(suggest, str) else tuple(suggest)
    for method in methods:
        if not isinstance(method, str) or method not in SUGGESTION_METHODS:
            raise ValueError(
                f"suggest must name methods in {SUGGESTION_METHODS} (or be None); got {suggest!r}"
            )
    return methods


def _check_ylim(ylim: Any) -> tuple[float, float] | str | None:
    """``ylim`` as ``"auto"``, None or a pair of distinct finite floats."""
    if ylim is None or (isinstance(ylim, str) and ylim == "auto"):
        return ylim
    message = (
        f"ylim must be 'auto', None or (bottom, top), two different finite numbers; got {ylim!r}"
    )
    if isinstance(ylim, str):
        raise ValueError(message)
    try:
        limits = np.asarray(ylim, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(message) from e
    if limits.shape != (2,) or not np.all(np.isfinite(limits)) or limits[0] == limits[1]:
        raise ValueError(message)
    return float(limits[0]), float(limits[1])


def _check_cmap(cmap: Any) -> Any:
    """``cmap`` as a matplotlib ``Colormap`` (None stays None)."""
    if cmap is None:
        return None
    try:
        return _pyplot().get_cmap(cmap)
    except (TypeError, ValueError) as e:
        raise ValueError(f"cmap must be a matplotlib colormap or its name; got {cmap!r}") from e


def _check_label_by(
    result: RangeTestResult, idx: np.ndarray, label_by: str | Sequence[str] | None
) -> tuple[str, ...]:
    if label_by is None:
        return _default_label_by(result, idx)
    if not isinstance(label_by, (str, Iterable)):
        raise TypeError(f"label_by must be a name, a sequence of names or None; got {label_by!r}")
    label_by = (label_by,) if isinstance(label_by, str) else tuple(label_by)
    for name in label_by:
        if not isinstance(name, str) or name not in result.hparams:
            raise ValueError(
                f"label_by names a hyperparameter the result lacks: {name!r}; "
                f"it has {tuple(result.hparams)}"
            )
    return label_by


def _legend_placement(legend: Any) -> str | None:
    """``legend`` as ``"auto"``, ``"inside"``, ``"outside"`` or None (no legend)."""
    if isinstance(legend, (bool, np.bool_)):
        return "auto" if legend else None
    if legend in ("inside", "outside"):
        return legend
    raise ValueError(f"legend must be True, False, 'inside' or 'outside'; got {legend!r}")
