"""Successive halving: train every candidate briefly, keep the best part, train it longer.

Short runs favour small learning rates (a large one needs time to pay off),
so a candidate is never dropped on a short run alone: each rung trains the
survivors of the previous one on a longer budget, from scratch (a schedule
scaled to the budget), and only the last rung, on the full budget, decides
(Jamieson & Talwalkar, 2016, https://arxiv.org/abs/1502.07943; Li et al.,
Hyperband, 2018, https://arxiv.org/abs/1603.06560).

A rung can also grow before it ranks: when its leader is at an edge of what
was raced, candidates past that edge train on the same budget and seeds
(``extend``), so a bracket that was too narrow is widened where it matters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np


class Rung(NamedTuple):
    """One rung of the race.

    Attributes:
      num_steps: the training budget of every run of the rung.
      candidates: ``(n,)`` indices of the candidates raced in this rung.
      scores: ``(n, seeds)`` their scores (higher is better; NaN for a run
        whose loss turned NaN/Inf).
      seconds: wall time of the rung.
      strategy: how the rung's lanes ran (e.g. ``"vmap/chunks"``).
      trusted: the scores can rank the candidates; an untrusted rung ends the
        race, and the last trusted rung decides.
    """

    num_steps: int
    candidates: np.ndarray
    scores: np.ndarray
    seconds: float
    strategy: str
    trusted: bool = True

    @property
    def mean_scores(self) -> np.ndarray:
        """``(n,)`` each candidate's mean score over seeds; ``-inf`` when any run failed."""
        scores = np.where(np.isfinite(self.scores), self.scores, -np.inf)
        return scores.mean(axis=1)


def unscored(rungs: Sequence[Rung]) -> np.ndarray:
    """Sorted indices of the candidates with a run that had no finite score in some rung.

    Examples:
      >>> rung = Rung(10, np.array([0, 3]), np.array([[1.0, np.nan], [2.0, 3.0]]), 0.1, "vmap")
      >>> print(unscored([rung]))
      [0]
    """
    failed = [r.candidates[~np.isfinite(r.mean_scores)] for r in rungs]
    return np.unique(np.concatenate([np.zeros(0, int), *failed]).astype(int))


def check_scored(rung: Rung, position: int) -> None:
    """Raises ``ValueError`` when no candidate of ``rung`` has a finite score.

    Such a rung cannot rank its candidates: the winner would be an arbitrary
    one (the first) with a score of ``-inf``.
    """
    if not np.isfinite(rung.mean_scores).any():
        raise ValueError(
            f"no run of race rung {position + 1} ({rung.num_steps} steps) has a finite score: "
            "every validation score was NaN or Inf, or every run diverged; check val_metric "
            "(or val_step's metrics) and val_data for NaN/Inf, and the loss"
        )


def survivors(rung: Rung, keep: int) -> np.ndarray:
    """The ``keep`` best candidates of ``rung`` (ties: the earlier candidate)."""
    order = np.argsort(-rung.mean_scores, kind="stable")
    return rung.candidates[np.sort(order[:keep])]


def deciding_rung(rungs: Sequence[Rung]) -> Rung:
    """The last trusted rung: the best of its candidates wins the race."""
    trusted = [r for r in rungs if r.trusted]
    if not trusted:
        raise ValueError("no rung of the race can rank its candidates")
    return trusted[-1]


def winner(rungs: Sequence[Rung]) -> int:
    """The index of the candidate that won the race."""
    rung = deciding_rung(rungs)
    return int(rung.candidates[int(np.argmax(rung.mean_scores))])


def grown(rung: Rung, more: Rung) -> Rung:
    """``rung`` with the candidates and scores of ``more`` (same budget and seeds) added.

    Examples:
      >>> a = Rung(10, np.array([0, 1]), np.array([[1.0], [2.0]]), 0.5, "vmap")
      >>> b = grown(a, Rung(10, np.array([2]), np.array([[3.0]]), 0.25, "vmap"))
      >>> print(b.candidates, b.mean_scores, b.seconds)
      [0 1 2] [1. 2. 3.] 0.75
    """
    if (more.num_steps, more.scores.shape[1]) != (rung.num_steps, rung.scores.shape[1]):
        raise ValueError("a rung grows only by runs of its own budget and seeds")
    return rung._replace(
        candidates=np.concatenate([rung.candidates, more.candidates]),
        scores=np.concatenate([rung.scores, more.scores]),
        seconds=rung.seconds + more.seconds,
        trusted=rung.trusted and more.trusted,
    )


def successive_halving(
    train: Callable[[np.ndarray, int, int], tuple[np.ndarray, str, bool]],
    num_candidates: int,
    budgets: Sequence[int],
    keep: Sequence[int],
    seeds: Sequence[int],
    interrupted: Callable[[tuple[Rung, ...]], KeyboardInterrupt] | None = None,
    extend: Callable[[Rung], Sequence[int]] | None = None,
    also_keep: Callable[[Rung], Sequence[int]] | None = None,
) -> list[Rung]:
    """Races ``num_candidates`` candidates over rungs of growing budgets.

    Args:
      train: ``train(candidates, num_steps, num_seeds) -> (scores (n, num_seeds),
        strategy, trusted)`` trains the given candidates (indices) for
        ``num_steps`` steps with ``num_seeds`` seeds each, all as lanes of one
        program; ``trusted=False`` says the scores cannot rank them, which ends
        the race (the last trusted rung decides).
      num_candidates: how many candidates enter the first rung.
      budgets: the steps of each rung, increasing.
      keep: how many candidates enter each rung after the first (one entry
        per rung after the first; each at most the previous rung's size).
      seeds: seeds per run in each rung.
      interrupted: ``interrupted(finished_rungs)`` builds the exception raised
        in place of a ``KeyboardInterrupt`` (Ctrl-C) during a rung; ``None``:
        the ``KeyboardInterrupt`` propagates as it is.
      extend: ``extend(rung) -> indices`` of new candidates (numbered on from
        those already raced) to train on the finished ``rung``'s budget and
        seeds and add to it before it ranks; asked again after each addition
        until it returns none (it bounds itself). ``None``: rungs never grow.
      also_keep: ``also_keep(first_rung) -> indices`` of candidates that enter
        the second rung besides the ``keep[0]`` best (short runs favour small
        learning rates: the first rung alone does not drop these).

    Returns:
      The rungs run, in order (:func:`winner` reads the result).

    Raises:
      ValueError: a rung where no candidate has a finite score (see
        :func:`check_scored`).

    Examples:
      >>> def train(cands, steps, num_seeds):  # candidate i scores i (more steps: no change)
      ...     return np.tile(cands[:, None].astype(float), (1, num_seeds)), "vmap/scan", True
      >>> rungs = successive_halving(train, 9, budgets=[10, 30, 90], keep=[3, 1], seeds=[1, 1, 2])
      >>> print([r.candidates.tolist() for r in rungs], winner(rungs))
      [[0, 1, 2, 3, 4, 5, 6, 7, 8], [6, 7, 8], [8]] 8
    """
    if not (len(budgets) == len(seeds) == len(keep) + 1):
        raise ValueError("budgets, seeds and keep must describe the same rungs")
    rungs: list[Rung] = []

    def run(indices: np.ndarray, num_steps: int, num_seeds: int) -> Rung:
        begin = time.perf_counter()
        try:
            scores, strategy, trusted = train(indices, num_steps, num_seeds)
        except KeyboardInterrupt:
            if interrupted is None:
                raise
            raise interrupted(tuple(rungs)) from None
        seconds = time.perf_counter() - begin
        return Rung(num_steps, indices, np.asarray(scores, float), seconds, strategy, trusted)

    for i, (num_steps, num_seeds) in enumerate(zip(budgets, seeds, strict=True)):
        if i:
            candidates = survivors(rungs[-1], min(keep[i - 1], len(rungs[-1].candidates)))
            if i == 1 and also_keep is not None:
                candidates = np.union1d(candidates, np.asarray(also_keep(rungs[0]), int))
        else:
            candidates = np.arange(num_candidates)
        rung = run(candidates, int(num_steps), int(num_seeds))
        check_scored(rung, i)
        while extend is not None and rung.trusted:
            more = np.asarray(extend(rung), int)
            if not more.size:
                break
            rung = grown(rung, run(more, int(num_steps), int(num_seeds)))
        rungs.append(rung)
        if not rung.trusted:
            break
    return rungs
