"""find_schedule against a default LR, a test-picked grid, learning-rate-free optimizers and Optuna.

Per task (``_lr_free_tasks.py``; offline data only), methods:

* ``default``: the optimizer's usual default learning rate, constant (SGD 0.01,
  Adam/AdamW 1e-3);
* ``find_schedule``: :func:`clrjax.find_schedule` (or ``find_schedule_step``)
  on the first 80% of the training split, scored on the last 20% (accuracy;
  the regression passes no ``val_metric``), once per race key;
* ``ceiling``: a hand-made grid of one-cycle schedules (8 peaks, 2x apart,
  cyclical momentum/``b1``), each trained with every seed; the peak with the
  best mean **test** score is reported: an upper bound no honest selection
  method can expect to beat, not a method;
* ``prodigy``, ``dadapt_adamw``, ``dog``, ``sf_adamw``, ``sf_sgd``:
  ``optax.contrib.prodigy``, ``dadapt_adamw``, ``dog``,
  ``schedule_free_adamw``, ``schedule_free_sgd`` with their defaults
  (schedule-free models are scored at ``schedule_free_eval_params``);
* ``optuna``: Optuna's TPE sampler with successive-halving pruning over the
  schedule kind (one-cycle or per-epoch 0.97 decay, as find_schedule) and the
  peak (log-uniform over find_schedule's range-test span, 1e-5 to 10), each
  trial one seed on the same 80/20 split for the full budget, reported per
  epoch, for the wall time find_schedule took with the same key (the sampler's
  seed), compiles included.

Every method's final configuration then trains on the whole training split
with the same seeds (100, 101, ...) and is scored on the test split: test
accuracy (%), or test MSE for the regression. Methods with race keys report
the mean over keys and the range across keys of the per-key seed means.

Verdicts per task (the targets of the issue):

1. find_schedule's mean over keys within 0.5 points of the ceiling (within 3%
   of the ceiling's MSE for the regression);
2. not below Prodigy by more than 2 standard errors (paired over seeds, each
   seed's find_schedule score averaged over the keys);
3. ahead of equal-time Optuna on average, with a smaller range across keys;
4. selection wall time at most 1x one 5-seed training of the chosen schedule
   (a fresh compile of the benchmark's vmapped trainer, compile included),
   for every key.

Run from the repository root (``pip install -e ".[bench,examples]"``)::

    python benchmarks/bench_vs_lr_free.py --epochs-scale 0.05 --seeds 2 --keys 1   # smoke
    python benchmarks/bench_vs_lr_free.py --tasks mlp_sgd cnn1d_sgd regression_sgd \\
        --out results.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import optuna  # noqa: E402
from _lr_free_tasks import TASKS, TUNING, Task, load_task  # noqa: E402
from _lr_free_train import Method, Runner, scheduled_method  # noqa: E402

import clrjax  # noqa: E402
from clrjax import demo  # noqa: E402

METHODS = (
    "default",
    "find_schedule",
    "ceiling",
    "prodigy",
    "dadapt_adamw",
    "dog",
    "sf_adamw",
    "sf_sgd",
    "optuna",
)
LR_FREE = {
    "prodigy": lambda: Method(optax.contrib.prodigy()),
    "dadapt_adamw": lambda: Method(optax.contrib.dadapt_adamw()),
    "dog": lambda: Method(optax.contrib.dog()),
    "sf_adamw": lambda: Method(
        optax.contrib.schedule_free_adamw(), eval_params=optax.contrib.schedule_free_eval_params
    ),
    "sf_sgd": lambda: Method(
        optax.contrib.schedule_free_sgd(), eval_params=optax.contrib.schedule_free_eval_params
    ),
}
GRID_PEAKS = 8  # the ceiling's one-cycle peaks: grid_low * 2**k
FIRST_SEED = 100
DECAY_RATE = 0.97  # find_schedule's default per-epoch decay (Optuna's "decay" kind uses it too)
OPTUNA_LR = (1e-5, 10.0)  # find_schedule's range-test span
WITHIN_POINTS = 0.5  # target 1, accuracy
WITHIN_MSE = 0.03  # target 1, regression: fraction of the ceiling's MSE
SE_RULE = 2.0  # target 2
TIME_RATIO = 1.0  # target 4


class Budget:
    """A task's training budget after ``--epochs-scale``."""

    def __init__(self, task: Task, scale: float):
        self.epochs = max(1, round(task.epochs * scale))
        self.per_epoch = task.steps_per_epoch
        self.steps = self.epochs * self.per_epoch


def schedule_arrays(task: Task, budget: Budget, kind: str, lrs, lanes_each: int):
    """``{learning_rate, momentum-or-b1: (len(lrs) * lanes_each, steps)}`` of ``kind``."""
    arms = [demo.Arm(f"{kind} {lr:g}", kind, float(lr), "bench") for lr in lrs]
    lr, mom = demo.arm_schedules(
        arms,
        budget.steps,
        steps_per_epoch=budget.per_epoch,
        decay_rate=DECAY_RATE,
        momentum=task.base_momentum,
    )
    return {
        "learning_rate": np.repeat(lr.T, lanes_each, axis=0),
        task.momentum_name: np.repeat(mom.T, lanes_each, axis=0),
    }


def choice_arrays(task: Task, budget: Budget, choice: clrjax.ScheduleChoice, lanes: int):
    """find_schedule's own schedules (``choice.schedule``, ``choice.momentum``), per step."""
    steps = jnp.arange(budget.steps)
    lr = np.asarray(jax.vmap(choice.schedule)(steps))
    mom = (
        np.full(budget.steps, task.base_momentum)
        if choice.momentum is None
        else np.asarray(jax.vmap(choice.momentum)(steps))
    )
    return {
        "learning_rate": np.tile(lr, (lanes, 1)),
        task.momentum_name: np.tile(mom, (lanes, 1)),
    }


def to_report(task: Task, scores: np.ndarray) -> np.ndarray:
    """Scores -> the reported figure: accuracy % (NaN -> 0) or MSE (NaN -> inf)."""
    scores = np.asarray(scores, dtype=float)
    if task.regression:
        return np.where(np.isfinite(scores), -scores, np.inf)
    return np.where(np.isfinite(scores), 100.0 * scores, 0.0)


class Bench:
    """Runs the methods of one task and keeps what they measured."""

    def __init__(self, task: Task, budget: Budget, seeds: list[int], keys: list[int]):
        self.task, self.budget, self.seeds, self.keys = task, budget, np.array(seeds), keys
        self.evals = {"test": task.test}
        self._final = Runner(task, scheduled_method(task), task.train)
        self.find: dict[int, dict] = {}

    def final(self, schedules: dict, lanes_each: int | None = None) -> np.ndarray:
        """``(configs, seeds)`` reported test figures of the scheduled optimizer."""
        n = len(self.seeds)
        configs = next(iter(schedules.values())).shape[0] // n
        scores = self._final.run(
            np.tile(self.seeds, configs), schedules, self.budget.steps, self.evals
        )["test"]
        return to_report(self.task, scores).reshape(configs, n)

    def default(self) -> dict:
        t = self.task
        sched = schedule_arrays(t, self.budget, "constant", [t.default_lr], len(self.seeds))
        return {"test": self.final(sched)[0].tolist(), "config": f"constant {t.default_lr:g}"}

    def ceiling(self) -> dict:
        t = self.task
        peaks = t.grid_low * 2.0 ** np.arange(GRID_PEAKS)
        table = self.final(schedule_arrays(t, self.budget, "one_cycle", peaks, len(self.seeds)))
        means = table.mean(axis=1)
        best = int(np.argmin(means) if t.regression else np.argmax(means))
        edge = " (at the grid's edge)" if best in (0, GRID_PEAKS - 1) else ""
        return {
            "test": table[best].tolist(),
            "config": f"one-cycle peak {peaks[best]:.3g}{edge}",
            "grid": {f"{p:.4g}": float(m) for p, m in zip(peaks, means, strict=True)},
        }

    def lr_free(self, name: str) -> dict:
        runner = Runner(self.task, LR_FREE[name](), self.task.train)
        scores = runner.run(self.seeds, {}, self.budget.steps, self.evals)["test"]
        return {"test": to_report(self.task, scores).tolist(), "config": "optax.contrib defaults"}

    def timed_final(self, schedules: dict) -> tuple[np.ndarray, float]:
        """5-seed training of one schedule with a fresh compile: figures and wall time."""
        begin = time.perf_counter()
        runner = Runner(self.task, scheduled_method(self.task), self.task.train)
        scores = runner.run(np.tile(self.seeds, 1), schedules, self.budget.steps, self.evals)
        return to_report(self.task, scores["test"]), time.perf_counter() - begin

    def find_schedule(self) -> dict:
        per_key = {}
        for key in self.keys:
            begin = time.perf_counter()
            choice = self.task.find(self.task, key, self.budget.steps, self.budget.per_epoch)
            seconds = time.perf_counter() - begin
            sched = choice_arrays(self.task, self.budget, choice, len(self.seeds))
            test, train_seconds = self.timed_final(sched)
            self.find[key] = {"seconds": seconds}
            per_key[str(key)] = {
                "test": test.tolist(),
                "config": repr(choice),
                "seconds": seconds,
                "train_seconds": train_seconds,
            }
            print(f"  find_schedule key {key}: {choice!r}, {seconds:.0f} s", flush=True)
        return {"keys": per_key}

    def search(self, key: int, timeout: float) -> tuple[optuna.Study, float]:
        """Optuna TPE + successive halving on the race split for ``timeout`` seconds."""
        t, budget = self.task, self.budget
        begin = time.perf_counter()
        runner = Runner(t, scheduled_method(t), t.race_train)  # compiled within the budget

        def objective(trial: optuna.Trial) -> float:
            kind = trial.suggest_categorical("kind", ["one_cycle", "decay"])
            lr = trial.suggest_float("learning_rate", *OPTUNA_LR, log=True)

            def report(epoch: int, scores: np.ndarray) -> None:
                value = float(scores[0])
                if not math.isfinite(value):
                    raise optuna.TrialPruned
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned

            scores = runner.run(
                np.array([10_000 * (key + 1) + trial.number]),
                schedule_arrays(t, budget, kind, [lr], 1),
                budget.steps,
                {"val": t.race_val},
                report=report,
                report_on=t.race_val,
            )["val"]
            value = float(scores[0])
            return value if math.isfinite(value) else -1e9

        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=key),
            pruner=optuna.pruners.SuccessiveHalvingPruner(),
        )
        study.optimize(objective, timeout=timeout)
        return study, time.perf_counter() - begin

    def optuna(self) -> dict:
        t = self.task
        per_key = {}
        for key in self.keys:
            if key not in self.find:
                raise ValueError("optuna's time budget is find_schedule's: run find_schedule too")
            study, seconds = self.search(key, self.find[key]["seconds"])
            done = [s for s in study.trials if s.state == optuna.trial.TrialState.COMPLETE]
            if done:
                kind, lr = study.best_params["kind"], study.best_params["learning_rate"]
                test = self.final(schedule_arrays(t, self.budget, kind, [lr], len(self.seeds)))[0]
                config = f"{kind} {lr:.3g}"
            else:  # no trial finished in the time: nothing to train
                test = np.full(len(self.seeds), np.inf if t.regression else 0.0)
                config = "no trial completed"
            per_key[str(key)] = {
                "test": test.tolist(),
                "config": f"{config} ({len(done)} of {len(study.trials)} trials completed)",
                "seconds": seconds,
            }
            print(f"  optuna key {key}: {per_key[str(key)]['config']}, {seconds:.0f} s", flush=True)
        return {"keys": per_key}

    def run(self, name: str) -> dict:
        if name in LR_FREE:
            return self.lr_free(name)
        return getattr(self, name)()


# --- summaries ---------------------------------------------------------------------------


def key_means(entry: dict) -> np.ndarray:
    """Per-key seed means of a keyed method (one row for an unkeyed one)."""
    if "keys" in entry:
        return np.array([np.mean(k["test"]) for k in entry["keys"].values()])
    return np.array([np.mean(entry["test"])])


def per_seed(entry: dict) -> np.ndarray:
    """Per-seed figures (a keyed method's averaged over its keys)."""
    if "keys" in entry:
        return np.mean([k["test"] for k in entry["keys"].values()], axis=0)
    return np.asarray(entry["test"], dtype=float)


def seed_std(entry: dict) -> float:
    """Std over seeds (a keyed method's: the mean over its keys; NaN: a run diverged)."""
    runs = [k["test"] for k in entry["keys"].values()] if "keys" in entry else [entry["test"]]
    runs = [np.asarray(r, dtype=float) for r in runs]
    if not all(np.isfinite(r).all() for r in runs):
        return float("nan")
    return float(np.mean([np.std(r) for r in runs]))


def short_config(text: str) -> str:
    """``"ScheduleChoice(decay, learning_rate=0.02, ..."`` -> ``"decay 0.02"``; others unchanged.

    Examples:
      >>> short_config("ScheduleChoice(one_cycle, learning_rate=0.496, total_steps=1860; ...)")
      'one_cycle 0.496'
    """
    found = re.match(r"ScheduleChoice\((\w+), learning_rate=([^,]+),", text)
    return f"{found[1]} {found[2]}" if found else text


def table(task_result: dict) -> str:
    """The task's markdown table."""
    regression = task_result["regression"]
    unit = "test MSE" if regression else "test accuracy (%)"
    fmt = "{:.4g}" if regression else "{:.2f}"
    lines = [
        f"| method | {unit}: mean | range across keys | std over seeds | selection (s) | "
        "configuration |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in task_result["methods"].items():
        means = key_means(entry)
        spread = (
            f"{fmt.format(means.min())} to {fmt.format(means.max())}" if len(means) > 1 else "-"
        )
        if "keys" in entry:
            secs = np.mean([k["seconds"] for k in entry["keys"].values()])
            config = "; ".join(
                f"key {k}: {short_config(v['config'])}" for k, v in entry["keys"].items()
            )
            seconds = f"{secs:.0f}"
        else:
            config, seconds = entry["config"], "-"
        label = f"{name} (test-picked: upper bound)" if name == "ceiling" else name
        std = seed_std(entry)
        lines.append(
            f"| {label} | {fmt.format(means.mean())} | {spread} | "
            f"{fmt.format(std) if np.isfinite(std) else 'diverged'} | {seconds} | {config} |"
        )
    return "\n".join(lines)


def _word(ok: bool | None) -> str:
    return {True: "HOLDS", False: "DOES NOT HOLD", None: "not checked"}[ok]


def verdicts(task_result: dict) -> list[str]:
    """One line per target of the issue."""
    methods, regression = task_result["methods"], task_result["regression"]
    name = task_result["task"]
    if "find_schedule" not in methods:
        return [f"{name}: find_schedule not run; no verdicts"]
    fs = methods["find_schedule"]
    fs_mean, fs_means = key_means(fs).mean(), key_means(fs)
    out = []
    if "ceiling" in methods:
        ceil = key_means(methods["ceiling"]).mean()
        if regression:
            ok = bool(fs_mean <= ceil * (1 + WITHIN_MSE))
            text = f"MSE {fs_mean:.4g} vs ceiling {ceil:.4g} ({fs_mean / ceil - 1:+.1%})"
        else:
            ok = bool(fs_mean >= ceil - WITHIN_POINTS)
            text = f"{fs_mean:.2f}% vs ceiling {ceil:.2f}% ({fs_mean - ceil:+.2f} points)"
        out.append(f"{name}: [1] within {'3%' if regression else '0.5 points'} of the ceiling: "
                   f"{_word(ok)} ({text})")  # fmt: skip
    if "prodigy" in methods:
        sign = -1.0 if regression else 1.0
        mean, se = demo.paired(sign * per_seed(fs), sign * per_seed(methods["prodigy"]))
        ok = bool(mean >= -SE_RULE * se) if np.isfinite(se) else None
        out.append(
            f"{name}: [2] not below Prodigy by more than {SE_RULE:g} SE: {_word(ok)} "
            f"(paired difference over seeds {mean:+.3g} ± {se:.2g}; positive: find_schedule "
            "better)"
        )
    if "optuna" in methods:
        op_means = key_means(methods["optuna"])
        ahead = fs_mean < op_means.mean() if regression else fs_mean > op_means.mean()
        narrower = np.ptp(fs_means) < np.ptp(op_means)
        out.append(
            f"{name}: [3] ahead of equal-time Optuna with a smaller spread: "
            f"{_word(bool(ahead and narrower))} (mean {fs_mean:.4g} vs {op_means.mean():.4g}; "
            f"range across keys {np.ptp(fs_means):.3g} vs {np.ptp(op_means):.3g})"
        )
    ratios = [k["seconds"] / k["train_seconds"] for k in fs["keys"].values()]
    out.append(
        f"{name}: [4] selection <= {TIME_RATIO:g}x one 5-seed training of the chosen schedule: "
        f"{_word(bool(max(ratios) <= TIME_RATIO))} (ratios per key: "
        + ", ".join(f"{r:.2f}x" for r in ratios)
        + ")"
    )
    return out


def machine() -> str:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores ({jax.default_backend()}), jax "
        f"{jax.__version__}, optax {optax.__version__}, optuna {optuna.__version__}, commit "
        f"{commit or 'unknown'}"
    )


def report(results: dict) -> str:
    """The whole markdown report."""
    out = [f"Machine: {results['machine']}; {results['date']}; argv: `{results['argv']}`", ""]
    for r in results["tasks"].values():
        out += [
            f"### {r['task']}: {TUNING[r['task']]}",
            "",
            f"{r['description']}; {r['epochs']} epochs x {r['per_epoch']} steps, "
            f"{len(r['seeds'])} seeds, race keys {r['keys']}.",
            "",
            table(r),
            "",
            *verdicts(r),
            "",
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=5, help="final-training seeds per method")
    parser.add_argument("--keys", type=int, default=3, help="race keys of find_schedule / Optuna")
    parser.add_argument(
        "--epochs-scale", type=float, default=1.0, help="shrink every budget (a smoke run)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument(
        "--report", type=Path, nargs="+", help="only print the report of saved --out files"
    )
    args = parser.parse_args(argv)
    if args.report:
        for path in args.report:
            print(report(json.loads(path.read_text())))
        return 0
    if "optuna" in args.methods and "find_schedule" not in args.methods:
        parser.error("optuna's time budget is find_schedule's: add find_schedule to --methods")
    if not 0 < args.epochs_scale <= 1 or args.seeds < 1 or args.keys < 1:
        parser.error("need 0 < --epochs-scale <= 1, --seeds >= 1, --keys >= 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    order = [m for m in METHODS if m in args.methods]  # find_schedule before optuna
    results = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "argv": " ".join(sys.argv[1:] if argv is None else argv),
        "tasks": {},
    }
    for name in args.tasks:
        task = load_task(name)
        budget = Budget(task, args.epochs_scale)
        seeds = list(range(FIRST_SEED, FIRST_SEED + args.seeds))
        bench = Bench(task, budget, seeds, list(range(args.keys)))
        print(f"== {name}: {task.description} ({budget.epochs} epochs)", flush=True)
        entry = {
            "task": name,
            "description": task.description,
            "tuning": task.tuning,
            "regression": task.regression,
            "epochs": budget.epochs,
            "per_epoch": budget.per_epoch,
            "seeds": seeds,
            "keys": bench.keys,
            "methods": {},
        }
        for method in order:
            begin = time.perf_counter()
            entry["methods"][method] = bench.run(method)
            entry["methods"][method]["wall"] = time.perf_counter() - begin
            print(f"  {method}: {time.perf_counter() - begin:.0f} s", flush=True)
        results["tasks"][name] = entry
        print(table(entry), *verdicts(entry), sep="\n", flush=True)
        if args.out is not None:  # after every task: a long run keeps what it measured
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1))
            tmp.replace(args.out)
    print()
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
