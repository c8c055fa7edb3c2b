"""The range test's result: frozen NumPy arrays, with suggestions, plots and save/load."""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from clrjax import _suggest
from clrjax._npz import load_npz, save_npz
from clrjax._suggest import DEFAULT_METHOD

_HPARAM_PREFIX = "hparams/"
# Entries every file written by RangeTestResult.save has.
_SAVED_KEYS = ("lrs", "losses", "smoothed", "diverged_at", "grid_names", "hparam_names", "strategy")


class BestLane(NamedTuple):
    """The lane picked by :meth:`RangeTestResult.best`, with its suggestion.

    Attributes:
      index: the lane's index (a row of ``RangeTestResult.losses``).
      hparams: the lane's hyperparameters as Python numbers
        (:meth:`RangeTestResult.lane_hparams`), e.g. ``{"weight_decay": 0.0001,
        "seed": 0}``; empty without a grid.
      lr: the learning rate :meth:`RangeTestResult.suggest` picks for that lane
        with the method asked for; NaN when that lane gives no suggestion.

    Examples:
      >>> import numpy as np
      >>> import clrjax
      >>> curves = np.array([[2.0, 1.5, 1.2], [2.0, 1.0, 0.8]])
      >>> result = clrjax.RangeTestResult(
      ...     lrs=np.array([0.01, 0.1, 1.0]), losses=curves, smoothed=curves,
      ...     diverged_at=np.array([-1, -1]), hparams={"weight_decay": np.array([0.0, 1e-4])},
      ...     grid_names=("weight_decay",))
      >>> best = result.best("minimum", skip_start=0, skip_end=0)
      >>> best
      BestLane(index=1, hparams={'weight_decay': 0.0001}, lr=0.1)
      >>> print(result.lane_label(best.index))
      weight_decay=0.0001
    """

    index: int
    hparams: dict[str, float | int]
    lr: float


@dataclasses.dataclass(frozen=True, eq=False)
class RangeTestResult:
    """What :func:`clrjax.range_test` measured, as NumPy arrays.

    The fields are checked when a result is made (``TypeError`` for a wrong
    type, such as string losses; ``ValueError`` for shapes that do not fit
    together, a ``diverged_at`` outside ``[-1, num_steps)``, a ``grid_names``
    entry that is not in ``hparams``) and stored as read-only copies, which
    cannot be made writable. Results can be pickled and deep-copied.

    Attributes:
      lrs: ``(num_steps,)`` learning rate of each step (shared by all lanes).
      losses: ``(lanes, num_steps)`` raw training loss of each step. A lane's
        loss is kept for the step it is flagged on as diverged (NaN or inf
        if that is why) and NaN after it (its outputs are masked), as for
        steps never run after an early stop.
      smoothed: ``(lanes, num_steps)`` smoothed loss (NaN where ``losses`` is).
      diverged_at: ``(lanes,)`` the step a lane was flagged on as diverged
        (a NaN/inf loss, or the divergence threshold), or -1.
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
        # Checked, then frozen: read-only copies nobody can make writable again,
        # so no caller can edit a curve in place, nor change it through an input.
        fields = _checked_fields(self)
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # For pickle and copy.deepcopy: rebuild from the fields (hparams as a dict).
        values = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return type(self), tuple(dict(v) if isinstance(v, Mapping) else v for v in values)

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
        return ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in self.lane_hparams(i).items()
        )

    def suggest(
        self, method: str = DEFAULT_METHOD, *, smoothed: bool = True, **kwargs: Any
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
        self, method: str = DEFAULT_METHOD, *, smoothed: bool = True, **kwargs: Any
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

    def best(self, method: str = DEFAULT_METHOD, **kwargs: Any) -> BestLane:
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

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The result as named NumPy arrays (what :meth:`save` writes; no objects)."""
        arrays = {
            "lrs": self.lrs,
            "losses": self.losses,
            "smoothed": self.smoothed,
            "diverged_at": self.diverged_at,
            "grid_names": np.array(self.grid_names, dtype=str),
            "hparam_names": np.array(list(self.hparams), dtype=str),
            "strategy": np.array(self.strategy, dtype=str),
        }
        arrays.update({_HPARAM_PREFIX + k: v for k, v in self.hparams.items()})
        if self.val_steps is not None:
            arrays["val_steps"] = self.val_steps
            arrays["val_losses"] = self.val_losses
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> RangeTestResult:
        """The result :meth:`to_arrays` described.

        Raises:
          KeyError: entries are missing (the message lists them).
          ValueError, TypeError: what they hold is not a valid result.
        """
        names = [str(k) for k in arrays.get("hparam_names", ())]
        missing = [k for k in _SAVED_KEYS if k not in arrays]
        missing += [_HPARAM_PREFIX + k for k in names if _HPARAM_PREFIX + k not in arrays]
        if missing:
            raise KeyError(f"entries {missing} are missing")
        return cls(
            lrs=arrays["lrs"],
            losses=arrays["losses"],
            smoothed=arrays["smoothed"],
            diverged_at=arrays["diverged_at"],
            hparams={k: arrays[_HPARAM_PREFIX + k] for k in names},
            grid_names=tuple(str(k) for k in arrays["grid_names"]),
            val_steps=arrays.get("val_steps"),
            val_losses=arrays.get("val_losses"),
            strategy=str(arrays["strategy"]),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves to an ``.npz`` file (no pickle); :meth:`load` restores it exactly.

        The file is written under a temporary name in the same directory, then
        renamed to ``path``: a save that fails (a full disk, say) leaves a
        previous file at ``path`` as it was.
        """
        save_npz(path, self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RangeTestResult:
        """Loads a result written by :meth:`save`.

        Raises:
          FileNotFoundError: no file at ``path``.
          ValueError: the file is not one :meth:`save` wrote (not an ``.npz``
            archive, entries missing, pickled object arrays), or what it holds
            is not a valid result.
          TypeError: an entry has the wrong type (e.g. string losses).
        """
        try:
            return cls.from_arrays(load_npz(path, "RangeTestResult.save"))
        except KeyError as e:
            raise ValueError(
                f"{os.fspath(path)!r} is not a RangeTestResult.save file: {e.args[0]}"
            ) from None


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only copy backed by ``bytes``, so its WRITEABLE flag cannot be set again."""
    array = np.ascontiguousarray(array)
    return np.frombuffer(array.tobytes(), dtype=array.dtype).reshape(array.shape)


def _array(
    name: str, value: Any, kinds: str, what: str, shape: tuple[int | None, ...]
) -> np.ndarray:
    """``value`` as a frozen array of a dtype kind in ``kinds`` and ``shape`` (None: any size)."""
    array = np.asarray(value)
    if array.dtype.kind not in kinds:
        raise TypeError(
            f"{name} must be an array of {what}, got dtype {array.dtype} (shape {array.shape})"
        )
    if array.ndim != len(shape) or any(
        n not in (None, m) for n, m in zip(shape, array.shape, strict=True)
    ):
        dims = ", ".join("?" if n is None else str(n) for n in shape)
        expected = f"({dims},)" if len(shape) == 1 else f"({dims})"
        raise ValueError(f"{name} must have shape {expected}, got shape {array.shape}")
    return _frozen(array)


def _checked_fields(result: RangeTestResult) -> dict[str, Any]:
    """The fields of ``result`` checked against each other, as frozen arrays."""
    lrs = _array("lrs", result.lrs, "iuf", "numbers", (None,))
    if lrs.size == 0 or not np.all(np.isfinite(lrs)):
        raise ValueError(f"lrs must be a non-empty array of finite numbers, got {lrs!r}")
    steps = lrs.shape[0]
    losses = _array("losses", result.losses, "iuf", "numbers", (None, steps))
    lanes = losses.shape[0]
    if lanes == 0:
        raise ValueError("losses must have at least one lane (row), got shape (0, ...)")
    smoothed = _array("smoothed", result.smoothed, "iuf", "numbers", (lanes, steps))
    diverged_at = _array("diverged_at", result.diverged_at, "iu", "integers", (lanes,))
    if np.any((diverged_at < -1) | (diverged_at >= steps)):
        raise ValueError(f"diverged_at must be -1 or a step in [0, {steps}), got {diverged_at!r}")
    if not isinstance(result.hparams, Mapping):
        raise TypeError(f"hparams must be a mapping name -> (lanes,) array, got {result.hparams!r}")
    hparams = {}
    for name, values in result.hparams.items():
        if not isinstance(name, str):
            raise TypeError(f"hparams names must be strings, got {name!r}")
        hparams[name] = _array(f"hparams[{name!r}]", values, "biuf", "numbers", (lanes,))
    given = result.grid_names
    if isinstance(given, str) or not isinstance(given, Iterable):
        raise TypeError(f"grid_names must be a sequence of strings, got {given!r}")
    grid_names = tuple(given)
    if not all(isinstance(n, str) for n in grid_names):
        raise TypeError(f"grid_names must be a sequence of strings, got {given!r}")
    unknown = [n for n in grid_names if n not in hparams]
    if unknown or len(set(grid_names)) != len(grid_names):
        raise ValueError(
            f"grid_names must be distinct names of hparams {tuple(hparams)}, got {grid_names!r}"
        )
    val_steps, val_losses = result.val_steps, result.val_losses
    if (val_steps is None) != (val_losses is None):
        raise ValueError("val_steps and val_losses must be given together (or both None)")
    if val_steps is not None:
        val_steps = _array("val_steps", val_steps, "iu", "integers", (None,))
        if np.any((val_steps < 0) | (val_steps >= steps)):
            raise ValueError(f"val_steps must be steps in [0, {steps}), got {val_steps!r}")
        shape = (lanes, val_steps.shape[0])
        val_losses = _array("val_losses", val_losses, "iuf", "numbers", shape)
    if not isinstance(result.strategy, str):
        raise TypeError(f"strategy must be a string, got {result.strategy!r}")
    return {
        "lrs": lrs,
        "losses": losses,
        "smoothed": smoothed,
        "diverged_at": diverged_at,
        "hparams": types.MappingProxyType(hparams),
        "grid_names": grid_names,
        "val_steps": val_steps,
        "val_losses": val_losses,
    }


def _nanmin(row: np.ndarray) -> float:
    finite = row[np.isfinite(row)]
    return float(finite.min()) if finite.size else float("nan")
