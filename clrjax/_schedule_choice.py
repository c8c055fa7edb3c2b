"""The answer of :func:`clrjax.find_schedule`: the schedule that won the race, and the race."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optax

from clrjax._candidates import KINDS, Candidate, edge, kind_schedules
from clrjax._npz import load_npz, save_npz
from clrjax._optax_glue import scheduled
from clrjax._race import Rung, deciding_rung, unscored, winner
from clrjax._result import RangeTestResult

_RANGE_TEST_PREFIX = "range_test/"


class FindScheduleInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`clrjax.find_schedule`'s race; what had finished is kept.

    Raised when the race is interrupted (a Ctrl-C during the range test raises
    :class:`clrjax.RangeTestInterrupted` with its partial curve instead). The
    rung that was running is lost (it is answered when its compiled program
    returns, or between two of its chunks).

    Attributes:
      range_test: the finished range test (:class:`~clrjax.RangeTestResult`).
      candidates: every candidate of the race.
      rungs: the rungs that finished, in order (possibly none).
    """

    def __init__(
        self,
        range_test: RangeTestResult,
        candidates: tuple[Candidate, ...],
        rungs: tuple[Rung, ...],
    ):
        super().__init__(
            f"find_schedule interrupted after {len(rungs)} of its race's rungs; see .rungs, "
            ".range_test and .leader"
        )
        self.range_test = range_test
        self.candidates = tuple(candidates)
        self.rungs = tuple(rungs)

    @property
    def leader(self) -> Candidate | None:
        """The best candidate of the last finished trusted rung (``None``: no rung finished)."""
        if not any(r.trusted for r in self.rungs):
            return None
        return self.candidates[winner(self.rungs)]


@dataclasses.dataclass(frozen=True, eq=False)
class ScheduleChoice:
    """The schedule :func:`clrjax.find_schedule` picked, how it was picked, and what it cost.

    Attributes:
      kind: the winner's schedule kind (``"one_cycle"`` or ``"decay"``).
      learning_rate: its peak (one-cycle) or initial (decay) learning rate.
      hparams: its grid values, ``name -> value`` (empty without a grid).
      total_steps: the training budget the schedule spans.
      steps_per_epoch: steps between two decays of ``"decay"``.
      decay_rate: the ``"decay"`` factor per epoch.
      momentum_name: the optimizer argument one-cycle cycles (``"momentum"``,
        ``"b1"``), or ``None``.
      base_momentum: that argument's constant value (held by ``"decay"``).
      candidates: every raced :class:`~clrjax._candidates.Candidate`.
      rungs: the race's rungs (:class:`~clrjax._race.Rung`: budget, candidates,
        per-seed scores, seconds).
      score: what the scores measure (higher is better).
      range_test: the range test that proposed the candidates.
      seconds: wall time of the whole choice (range test and race, compiles included).
      outside: per grid point, the suggestion methods whose pick lay too far
        outside the bracket to be raced (``{point: {method: lr}}``).
      factory: the optimizer factory (not saved; pass it to :meth:`optimizer`
        after :meth:`load`).
    """

    kind: str
    learning_rate: float
    hparams: Mapping[str, float]
    total_steps: int
    steps_per_epoch: float
    decay_rate: float
    momentum_name: str | None
    base_momentum: float | None
    candidates: tuple[Candidate, ...]
    rungs: tuple[Rung, ...]
    score: str
    range_test: RangeTestResult
    seconds: float
    outside: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    factory: Callable[..., optax.GradientTransformation] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        object.__setattr__(self, "hparams", dict(self.hparams))
        object.__setattr__(self, "candidates", tuple(self.candidates))
        object.__setattr__(self, "rungs", tuple(self.rungs))

    def _schedules(self) -> tuple[optax.Schedule, optax.Schedule | None]:
        return kind_schedules(
            self.kind,
            self.learning_rate,
            self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            decay_rate=self.decay_rate,
            momentum=self.base_momentum if self.momentum_name else None,
        )

    @property
    def schedule(self) -> optax.Schedule:
        """The learning-rate schedule over ``total_steps`` (an ``optax.Schedule``)."""
        return self._schedules()[0]

    @property
    def momentum(self) -> optax.Schedule | None:
        """The momentum (or ``b1``) schedule of a one-cycle winner; ``None`` otherwise."""
        return self._schedules()[1] if self.kind == "one_cycle" else None

    @property
    def winner(self) -> int:
        """Index in :attr:`candidates` of the winner (the best of the last trusted rung)."""
        return winner(self.rungs)

    @property
    def interior(self) -> bool:
        """The winner's peak has raced peaks of its kind and grid point both below and above it.

        ``False``: the winner is the top (or bottom) peak raced, so a better
        one may lie beyond it; :func:`clrjax.find_schedule` races past an edge
        that leads a rung (``Search.max_extensions``), and warns when that
        bound, not the range test's limits, left the winner at an edge.
        """
        return not edge(self.candidates, self.candidates[self.winner])

    @property
    def unscored(self) -> tuple[int, ...]:
        """Indices in :attr:`candidates` of those with a run that had no finite score.

        A run scores NaN when its loss turned NaN/Inf (it diverged) or its
        validation score was not finite; such a candidate never survives a
        rung. :func:`clrjax.find_schedule` refuses a race where no candidate of
        a rung has a finite score; some without one are reported here and in
        the ``repr``.
        """
        return tuple(int(i) for i in unscored(self.rungs))

    @property
    def decided_by(self) -> str:
        """Which rung decided, and why the race stopped early if it did."""
        rung = deciding_rung(self.rungs)
        j = self.rungs.index(rung)
        text = f"rung {j + 1} of {len(self.rungs)} ({rung.num_steps} steps): {self.score}"
        if not self.rungs[-1].trusted:
            text += (
                f"; rung {len(self.rungs)}'s validation loss rose from overconfidence, "
                "so the race stopped there (pass val_metric to race on)"
            )
        return text

    def candidate_scores(self) -> np.ndarray:
        """``(candidates, rungs)`` mean score of each candidate in each rung (NaN: not raced)."""
        table = np.full((len(self.candidates), len(self.rungs)), np.nan)
        for j, rung in enumerate(self.rungs):
            table[rung.candidates, j] = rung.mean_scores
        return table

    def optimizer(
        self, factory: Callable[..., optax.GradientTransformation] | None = None
    ) -> optax.GradientTransformation:
        """The optimizer for the full run: ``factory`` with the chosen schedules and values.

        Args:
          factory: the optimizer factory (default: the one given to
            ``find_schedule``; required after :meth:`load`).

        Returns:
          ``clrjax.scheduled(factory, learning_rate=self.schedule, [momentum
          schedule,] **self.hparams)``.
        """
        factory = self.factory if factory is None else factory
        if factory is None:
            raise ValueError(
                "optimizer: pass the optimizer factory (a loaded ScheduleChoice does not keep it)"
            )
        extra: dict[str, Any] = dict(self.hparams)
        if self.momentum is not None:
            extra[self.momentum_name] = self.momentum
        return scheduled(factory, learning_rate=self.schedule, **extra)

    def plot(self, **kwargs: Any) -> Any:
        """Plots the curve with the candidates and the winner, and the race.

        See :func:`clrjax.plotting.plot_schedule_choice`.
        """
        from clrjax.plotting import plot_schedule_choice

        return plot_schedule_choice(self, **kwargs)

    def __repr__(self) -> str:
        grid = "".join(f", {k}={v:g}" for k, v in self.hparams.items())
        best = deciding_rung(self.rungs).mean_scores.max()
        failed = len(self.unscored)
        note = f"; {failed} without a finite score (see .unscored)" if failed else ""
        if not self.interior:
            side = "top" if edge(self.candidates, self.candidates[self.winner]) > 0 else "bottom"
            note += f"; the winner is the {side} peak raced (see .interior)"
        return (
            f"ScheduleChoice({self.kind}, learning_rate={self.learning_rate:.3g}{grid}, "
            f"total_steps={self.total_steps}; {len(self.candidates)} candidates raced over "
            f"{len(self.rungs)} rungs in {self.seconds:.1f} s{note}; {self.score} {best:.4g})"
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves to an ``.npz`` file (atomically, no pickle); :meth:`load` restores it."""
        names = sorted({k for c in self.candidates for k in c.hparams})
        arrays: dict[str, np.ndarray] = {
            "kind": np.array(self.kind),
            "learning_rate": np.array(self.learning_rate),
            "hparam_names": np.array(list(self.hparams), dtype=str),
            "hparam_values": np.array(list(self.hparams.values()), dtype=float),
            "total_steps": np.array(self.total_steps),
            "steps_per_epoch": np.array(self.steps_per_epoch),
            "decay_rate": np.array(self.decay_rate),
            "momentum_name": np.array(self.momentum_name or ""),
            "base_momentum": np.array(np.nan if self.base_momentum is None else self.base_momentum),
            "score": np.array(self.score),
            "seconds": np.array(self.seconds),
            "candidate_kinds": np.array([c.kind for c in self.candidates], dtype=str),
            "candidate_peaks": np.array([c.peak for c in self.candidates], dtype=float),
            "candidate_sources": np.array([c.source for c in self.candidates], dtype=str),
            "candidate_grid_names": np.array(names, dtype=str),
            "candidate_grid": np.array(
                [[c.hparams.get(k, np.nan) for k in names] for c in self.candidates], dtype=float
            ).reshape(len(self.candidates), len(names)),
            "num_rungs": np.array(len(self.rungs)),
            "outside": np.array(
                [
                    f"{point}|{m}|{lr!r}"
                    for point, picks in self.outside.items()
                    for m, lr in picks.items()
                ],
                dtype=str,
            ),
        }
        for j, rung in enumerate(self.rungs):
            arrays[f"rung{j}/num_steps"] = np.array(rung.num_steps)
            arrays[f"rung{j}/candidates"] = rung.candidates
            arrays[f"rung{j}/scores"] = rung.scores
            arrays[f"rung{j}/seconds"] = np.array(rung.seconds)
            arrays[f"rung{j}/strategy"] = np.array(rung.strategy)
            arrays[f"rung{j}/trusted"] = np.array(rung.trusted)
        for name, value in self.range_test.to_arrays().items():
            arrays[_RANGE_TEST_PREFIX + name] = value
        save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScheduleChoice:
        """Loads a choice written by :meth:`save` (without its optimizer factory).

        Raises:
          FileNotFoundError: no file at ``path``.
          ValueError: the file is not one :meth:`save` wrote: not an ``.npz``
            archive, entries missing, or entries that do not fit together
            (shapes, a rung naming a candidate that is not there).
        """
        e = load_npz(path, "ScheduleChoice.save")
        try:
            return cls._from_arrays(e)
        except KeyError as missing:
            why = f"{missing.args[0]!r} is missing"
        except (ValueError, TypeError, IndexError) as error:
            why = str(error)
        raise ValueError(f"{os.fspath(path)!r} is not a ScheduleChoice.save file: {why}")

    @classmethod
    def _from_arrays(cls, e: Mapping[str, np.ndarray]) -> ScheduleChoice:
        """The choice :meth:`save` wrote as ``e``; ``ValueError`` names what does not fit."""
        names = [str(n) for n in _vector(e, "candidate_grid_names")]
        kinds = _vector(e, "candidate_kinds")
        n = len(kinds)
        peaks, sources = _vector(e, "candidate_peaks", n), _vector(e, "candidate_sources", n)
        grid = np.asarray(e["candidate_grid"], float)
        if grid.shape != (n, len(names)):
            raise ValueError(f"candidate_grid has shape {grid.shape}, not {(n, len(names))}")
        for kind in map(str, kinds):
            if kind not in KINDS:
                raise ValueError(f"candidate kind {kind!r} is not one of {KINDS}")
        candidates = tuple(
            Candidate(
                str(kind), float(peak), dict(zip(names, map(float, row), strict=True)), str(source)
            )
            for kind, peak, row, source in zip(kinds, peaks, grid, sources, strict=True)
        )
        num_rungs = _integer(e, "num_rungs")
        if num_rungs < 1:
            raise ValueError(f"num_rungs is {num_rungs}, not at least 1")
        rungs = tuple(_rung(e, j, n) for j in range(num_rungs))
        if not any(r.trusted for r in rungs):
            raise ValueError("no rung is trusted")
        prefix = len(_RANGE_TEST_PREFIX)
        range_test = RangeTestResult.from_arrays(
            {k[prefix:]: v for k, v in e.items() if k.startswith(_RANGE_TEST_PREFIX)}
        )
        base = float(e["base_momentum"])
        outside: dict[str, dict[str, float]] = {}
        for row in map(str, _vector(e, "outside")):
            fields = row.split("|")
            if len(fields) != 3:
                raise ValueError(f"outside entry {row!r} is not 'point|method|lr'")
            outside.setdefault(fields[0], {})[fields[1]] = float(fields[2])
        hparam_names = _vector(e, "hparam_names")
        hparam_values = _vector(e, "hparam_values", len(hparam_names))
        return cls(
            kind=str(e["kind"]),
            learning_rate=float(e["learning_rate"]),
            hparams=dict(zip(map(str, hparam_names), map(float, hparam_values), strict=True)),
            total_steps=_integer(e, "total_steps"),
            steps_per_epoch=float(e["steps_per_epoch"]),
            decay_rate=float(e["decay_rate"]),
            momentum_name=str(e["momentum_name"]) or None,
            base_momentum=None if np.isnan(base) else base,
            candidates=candidates,
            rungs=rungs,
            score=str(e["score"]),
            range_test=range_test,
            seconds=float(e["seconds"]),
            outside=outside,
        )


def _vector(e: Mapping[str, np.ndarray], name: str, length: int | None = None) -> np.ndarray:
    """The 1-D entry ``name`` of a saved choice, of ``length`` entries when given."""
    value = np.asarray(e[name])
    if value.ndim != 1 or (length is not None and len(value) != length):
        want = "1-D" if length is None else f"({length},)"
        raise ValueError(f"{name} has shape {value.shape}, not {want}")
    return value


def _integer(e: Mapping[str, np.ndarray], name: str) -> int:
    """The integer scalar entry ``name`` of a saved choice (a float is not rounded)."""
    value = np.asarray(e[name])
    if value.ndim != 0 or value.dtype.kind not in "iu":
        raise ValueError(f"{name} is {value!r}, not an integer")
    return int(value)


def _flag(e: Mapping[str, np.ndarray], name: str) -> bool:
    """The boolean scalar entry ``name`` of a saved choice (a string is not truthy)."""
    value = np.asarray(e[name])
    if value.ndim != 0 or value.dtype != bool:
        raise ValueError(f"{name} is {value!r}, not a bool")
    return bool(value)


def _rung(e: Mapping[str, np.ndarray], j: int, num_candidates: int) -> Rung:
    """Rung ``j`` of a saved choice, its candidates checked against ``num_candidates``."""
    candidates = _vector(e, f"rung{j}/candidates")
    inside = candidates.dtype.kind in "iu" and np.all(
        (0 <= candidates) & (candidates < num_candidates)
    )
    if not candidates.size or not inside:
        raise ValueError(
            f"rung{j}/candidates {candidates.tolist()} are not indices of the "
            f"{num_candidates} candidates"
        )
    scores = np.asarray(e[f"rung{j}/scores"], float)
    if scores.ndim != 2 or scores.shape[0] != len(candidates) or scores.shape[1] < 1:
        raise ValueError(f"rung{j}/scores has shape {scores.shape}, not ({len(candidates)}, seeds)")
    return Rung(
        _integer(e, f"rung{j}/num_steps"),
        candidates,
        scores,
        float(e[f"rung{j}/seconds"]),
        str(e[f"rung{j}/strategy"]),
        _flag(e, f"rung{j}/trusted"),
    )
