"""Range test, stage 3: the result object (NumPy arrays only)."""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from clrjax import _suggest

_HPARAM_PREFIX = "hparams/"


class BestLane(NamedTuple):
    """The lane picked by :meth:`RangeTestResult.best`."""

    index: int
    hparams: dict[str, float]
    lr: float


@dataclasses.dataclass(frozen=True, eq=False)
class RangeTestResult:
    """What :func:`clrjax.range_test` measured, as NumPy arrays.

    Attributes:
      lrs: ``(num_steps,)`` learning rate of each step (shared by all lanes).
      losses: ``(lanes, num_steps)`` raw training loss of each step; NaN after
        the lane diverged (its outputs are masked) and after an early stop.
      smoothed: ``(lanes, num_steps)`` smoothed loss (NaN where ``losses`` is).
      diverged_at: ``(lanes,)`` first step flagged as diverged, or -1.
      hparams: ``name -> (lanes,)`` hyperparameters of each lane (the grid's
        names, plus ``"seed"`` when seeds were given), in row-major grid order.
      grid_names: the grid's axis names, in order.
      val_steps: ``(num_val,)`` steps after which the validation loss was
        measured, or ``None``.
      val_losses: ``(lanes, num_val)`` validation losses, or ``None``.
      strategy: the lane strategy and step driver that ran, e.g. ``"vmap/scan"``.

    Examples:
      >>> import numpy as np
      >>> r = RangeTestResult(
      ...     lrs=np.array([0.01, 0.1, 1.0]),
      ...     losses=np.array([[1.0, 0.5, np.nan], [1.0, 0.8, 0.7]]),
      ...     smoothed=np.array([[1.0, 0.5, np.nan], [1.0, 0.8, 0.7]]),
      ...     diverged_at=np.array([1, -1]),
      ...     hparams={"weight_decay": np.array([0.0, 1e-4])},
      ...     grid_names=("weight_decay",),
      ... )
      >>> print(r.num_lanes, r.lane_label(1))
      2 weight_decay=0.0001
      >>> r
      RangeTestResult(2 lanes x 3 steps, lr 0.01..1, grid=('weight_decay',), diverged=1/2,
      strategy='vmap/scan')
      >>> print(r.suggest("minimum", skip_start=0, skip_end=0))  # one LR per lane
      [0.01 0.1 ]
      >>> print(r.best("minimum", skip_start=0, skip_end=0))
      BestLane(index=0, hparams={'weight_decay': 0.0}, lr=0.01)
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "result.npz")
      >>> r.save(path)
      >>> print(RangeTestResult.load(path).lane_label(0))
      weight_decay=0
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    diverged_at: np.ndarray
    hparams: Mapping[str, np.ndarray]
    grid_names: tuple[str, ...]
    val_steps: np.ndarray | None = None
    val_losses: np.ndarray | None = None
    strategy: str = "vmap/scan"

    def __post_init__(self) -> None:
        # Frozen means frozen: read-only copies, so no caller can edit a curve in place.
        for name in ("lrs", "losses", "smoothed", "diverged_at", "val_steps", "val_losses"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _read_only(value))
        hparams = {k: _read_only(v) for k, v in self.hparams.items()}
        object.__setattr__(self, "hparams", types.MappingProxyType(hparams))
        object.__setattr__(self, "grid_names", tuple(self.grid_names))

    def __repr__(self) -> str:
        diverged = int(np.sum(self.diverged_at >= 0))
        return (
            f"RangeTestResult({self.num_lanes} lanes x {self.num_steps} steps, "
            f"lr {self.lrs[0]:g}..{self.lrs[-1]:g}, grid={self.grid_names}, "
            f"diverged={diverged}/{self.num_lanes}, strategy={self.strategy!r})"
        )

    @property
    def num_lanes(self) -> int:
        return self.losses.shape[0]

    @property
    def num_steps(self) -> int:
        return self.lrs.shape[0]

    def lane_hparams(self, i: int) -> dict[str, float | int]:
        """Hyperparameters of lane ``i`` as Python numbers."""
        return {k: v[i].item() for k, v in self.hparams.items()}

    def lane_label(self, i: int) -> str:
        """A label such as ``"weight_decay=0.001, momentum=0.9"`` (``"lane 0"`` without grid)."""
        if not 0 <= i < self.num_lanes:
            raise IndexError(f"lane index {i} out of range for {self.num_lanes} lanes")
        if not self.hparams:
            return f"lane {i}"
        return ", ".join(f"{k}={v:g}" for k, v in self.lane_hparams(i).items())

    def suggest(
        self, method: str = "valley", *, smoothed: bool = True, **kwargs: Any
    ) -> np.ndarray:
        """Suggested learning rate per lane (NaN where none), via :func:`clrjax.suggest`.

        Each lane's curve is read as fastai and torch-lr-finder would have
        recorded it, which depends on why it ends (``diverged_at`` and the raw
        loss there tell):

        * never diverged: every step (up to a non-finite value, if any, as
          with ``non_finite="stopped"``);
        * stopped by the divergence threshold at step ``d``: steps ``0..d``;
        * raw loss inf at step ``d``: the record is steps ``0..d``, the inf
          included (both references record it, then stop);
        * raw loss NaN (or -inf) at step ``d``: the record is every step, the
          NaN ones included (neither reference stops on NaN; fastai then cuts
          its trimmed record before the first NaN).

        The record is then trimmed (``skip_start``, ``skip_end``) and cut
        before its first non-finite value.

        Args:
          method: a name in ``clrjax.SUGGESTION_METHODS`` (e.g. ``"valley"``,
            ``"steepest"``, ``"minimum"``).
          smoothed: analyse the smoothed losses (as fastai and torch-lr-finder
            do) rather than the raw ones.
          **kwargs: forwarded to :func:`clrjax.suggest` (``skip_start``,
            ``skip_end``, method options); ``non_finite`` is decided per lane
            as above and cannot be given.

        Returns:
          ``(lanes,)`` float array.
        """
        if "non_finite" in kwargs:
            raise TypeError(
                "RangeTestResult.suggest takes no non_finite: it knows how each lane's curve ends"
            )
        lrs, curves = _suggest.check_curves(self.lrs, self.smoothed if smoothed else self.losses)
        recorded = self._recorded_steps(curves)
        return _suggest.suggest_recorded(lrs, curves, recorded, method, **kwargs)

    def _recorded_steps(self, curves: np.ndarray) -> np.ndarray:
        """Per lane: how many steps fastai and torch-lr-finder would have recorded."""
        lanes = np.arange(self.num_lanes)
        diverged = self.diverged_at >= 0
        step = np.where(diverged, self.diverged_at, 0)
        at_step = self.losses[lanes, step]
        # NaN > threshold * best is false: a NaN loss (or -inf) never stops them.
        goes_on = diverged & (np.isnan(at_step) | (at_step == -np.inf))
        stopped = np.where(diverged, step + 1, _suggest.first_non_finite(curves))
        return np.where(goes_on, self.num_steps, stopped)

    def suggest_spread(
        self, method: str = "valley", *, smoothed: bool = True, **kwargs: Any
    ) -> list[tuple[dict[str, float | int], _suggest.SuggestionSpread]]:
        """Spread of the suggestions over seeds, for each configuration of the grid.

        Lanes that differ only in their ``"seed"`` are grouped, and each group
        is summarised like :func:`clrjax.suggest_spread` does (median, low and
        high suggestion in log space, and how many seeds gave one), from the
        lanes' :meth:`suggest` values. Without seeds every lane is its own group.

        Args:
          method: a name in ``clrjax.SUGGESTION_METHODS``.
          smoothed: analyse the smoothed losses rather than the raw ones.
          **kwargs: forwarded to :meth:`suggest`.

        Returns:
          A list, in grid order, of ``(hparams without "seed",
          SuggestionSpread(median, low, high, count))``.
        """
        values = self.suggest(method, smoothed=smoothed, **kwargs)
        if "seed" not in self.hparams:
            groups = {(i,): [i] for i in range(self.num_lanes)}
        else:
            groups = {}
            for i in range(self.num_lanes):
                config = tuple((k, v) for k, v in self.lane_hparams(i).items() if k != "seed")
                groups.setdefault(config, []).append(i)
        return [
            (
                {k: v for k, v in self.lane_hparams(lanes[0]).items() if k != "seed"},
                _suggest.spread_of(values[lanes]),
            )
            for lanes in groups.values()
        ]

    def best(self, method: str = "valley", **kwargs: Any) -> BestLane:
        """The lane reaching the lowest smoothed loss, with its suggested LR.

        Returns:
          ``BestLane(index, hparams, lr)``: ``lr`` is that lane's
          :meth:`suggest` value for ``method`` (NaN when there is none).

        Raises:
          ValueError: when no lane has a finite smoothed loss.
        """
        minima = np.array([_nanmin(row) for row in self.smoothed])
        if np.all(np.isnan(minima)):
            raise ValueError("no lane has a finite smoothed loss")
        index = int(np.nanargmin(minima))
        lr = float(self.suggest(method, **kwargs)[index])
        return BestLane(index, self.lane_hparams(index), lr)

    def plot(self, **kwargs: Any) -> Any:
        """Plots the curves; see :func:`clrjax.plotting.plot_range_test`."""
        from clrjax.plotting import plot_range_test

        return plot_range_test(self, **kwargs)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves to an ``.npz`` file (no pickle); :meth:`load` restores it exactly."""
        arrays = {
            "lrs": self.lrs,
            "losses": self.losses,
            "smoothed": self.smoothed,
            "diverged_at": self.diverged_at,
            "grid_names": np.array(self.grid_names, dtype=str),
            "hparam_names": np.array(list(self.hparams), dtype=str),
            "strategy": np.array(self.strategy),
        }
        arrays.update({_HPARAM_PREFIX + k: v for k, v in self.hparams.items()})
        if self.val_steps is not None:
            arrays["val_steps"] = self.val_steps
            arrays["val_losses"] = self.val_losses
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RangeTestResult:
        """Loads a result written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            return cls(
                lrs=z["lrs"],
                losses=z["losses"],
                smoothed=z["smoothed"],
                diverged_at=z["diverged_at"],
                hparams={str(k): z[_HPARAM_PREFIX + str(k)] for k in z["hparam_names"]},
                grid_names=tuple(str(k) for k in z["grid_names"]),
                val_steps=z["val_steps"] if "val_steps" in z else None,
                val_losses=z["val_losses"] if "val_losses" in z else None,
                strategy=str(z["strategy"]),
            )


def _read_only(value: Any) -> np.ndarray:
    array = np.array(value)
    array.flags.writeable = False
    return array


def _nanmin(row: np.ndarray) -> float:
    finite = row[np.isfinite(row)]
    return float(finite.min()) if finite.size else float("nan")
