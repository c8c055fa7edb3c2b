"""Writes tests/data/suggest_goldens.json: the reference suggestions on fixed curves.

Run by hand (never by the tests) with a Python environment, outside the
repository, that has torch, matplotlib and torch-lr-finder 0.2.2, and a fastai
wheel fetched with ``pip download fastai==2.8.12 --no-deps -d WHEEL_DIR``:

    python scripts/gen_suggest_goldens.py --fastai WHEEL_DIR/fastai-2.8.12-py3-none-any.whl

References, run on each curve:

* torch-lr-finder (installed): a real ``LRFinder`` around a dummy model, its
  ``history`` set to the curve's record, then ``plot(suggest_lr=True)`` with default
  skips under matplotlib's Agg backend; the returned lr is the golden.
* fastai: importing fastai needs torchvision and more, so instead the source
  of its four suggestion functions (``valley``, ``slide``, ``minimum``,
  ``steep``) is read at run time from ``fastai/callback/schedule.py`` inside
  the wheel (or a checkout's file) given with ``--fastai`` and executed with
  torch and NumPy. No fastai code is stored in this repository. What
  fastai records and how ``Learner.lr_find`` trims it are ported here (a few
  lines, see :func:`fastai_record` and :func:`fastai_suggestions`).

What each reference records (its history) depends on how a curve ends; each
curve says so with ``end``:

* no end (``null``): every step is recorded.
* ``"stopped"`` at step ``d``: the test stopped after step ``d`` (divergence
  threshold): the history is the finite prefix, steps ``0..d``; clrjax's lane
  is NaN after ``d``.
* ``"nan"`` at ``d``: the loss turned NaN at step ``d``. Neither reference
  stops on NaN (``NaN > 4 * best`` is false): both record the NaN tail up to
  the last planned step.
* ``"inf"`` at ``d``: the loss turned inf at step ``d``; both references
  record that step, then stop (``inf > threshold * best``).

For ``"nan"`` and ``"inf"`` curves the torch-lr-finder history is the one a
real ``LRFinder.range_test`` records when its loss function returns the curve's
values one by one (``smooth_f=0``: recorded as given); the script checks that
it equals the history assumed for fastai. Curves are stored rounded to
float32, so the float32 references and clrjax (float64) compare the same
numbers.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import pathlib
import zipfile

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch_lr_finder import LRFinder

FASTAI_FUNCS = ("valley", "slide", "minimum", "steep")
SCHEDULE_PATH = "fastai/callback/schedule.py"
OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "suggest_goldens.json"


def load_fastai_functions(path: str) -> dict:
    """Executes fastai's suggestion functions, read from a wheel or a .py file."""
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as wheel:
            source = wheel.read(SCHEDULE_PATH).decode()
    else:
        source = pathlib.Path(path).read_text()
    namespace = {"np": np, "torch": torch, "to_np": lambda t: t.data.cpu().numpy()}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name in FASTAI_FUNCS:
            exec(ast.get_source_segment(source, node), namespace)
    missing = [name for name in FASTAI_FUNCS if name not in namespace]
    if missing:
        raise SystemExit(f"{path} has no {missing}")
    return {name: namespace[name] for name in FASTAI_FUNCS}


def finite_prefix(losses: np.ndarray) -> int:
    bad = np.flatnonzero(~np.isfinite(losses))
    return int(bad[0]) if bad.size else losses.shape[0]


def fastai_record(losses: np.ndarray) -> list[float]:
    """The smoothed losses fastai records for a curve whose loss is the whole story.

    ``Recorder.after_batch`` (order 50) appends ``smooth_loss.value``; then
    ``LRFinder.after_batch`` (order 60) updates ``best_loss`` and raises
    ``CancelFitException`` when ``smooth_loss > 4 * best_loss`` (or after
    ``num_it`` batches). So the step that stops the test is recorded, and a
    NaN never stops it.
    """
    record, best = [], np.float32(np.inf)
    for value in losses.astype(np.float32):
        record.append(float(value))
        best = min(best, value)  # ``if smooth_loss < best_loss``: NaN never updates
        if value > 4 * best:
            break
    return record


def history(losses: np.ndarray, end: dict | None) -> list[float]:
    """What both references record for a curve (see the module docstring)."""
    if end is None or end["kind"] == "stopped":
        return losses[: finite_prefix(losses)].tolist()
    record = fastai_record(losses)
    expected = losses.shape[0] if end["kind"] == "nan" else end["step"] + 1
    if len(record) != expected:
        raise SystemExit(f"fastai would record {len(record)} steps, not {expected}")
    real = torch_lr_finder_record(losses)  # torch-lr-finder's own loop
    if not np.array_equal(real, record, equal_nan=True):
        raise SystemExit(f"torch-lr-finder recorded {real}, expected {record}")
    return record


def torch_lr_finder_record(losses: np.ndarray) -> list[float]:
    """``LRFinder.range_test`` with a loss function that returns ``losses`` in turn."""
    values = iter(losses.tolist())

    def criterion(outputs, labels):
        return outputs.sum() * 0 + next(values)

    model = torch.nn.Linear(1, 1)
    finder = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-7), criterion)
    batch = torch.zeros(1, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(batch, batch))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(loader, end_lr=10, num_iter=losses.shape[0], smooth_f=0)
    return finder.history["loss"]


def torch_lr_finder_steepest(lrs: np.ndarray, record: list[float]) -> float | None:
    model = torch.nn.Linear(1, 1)
    finder = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-7), torch.nn.MSELoss())
    finder.history = {"lr": lrs[: len(record)].tolist(), "loss": list(record)}
    fig, ax = plt.subplots()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            _, lr = finder.plot(suggest_lr=True, ax=ax)
    except RuntimeError:  # "Need at least ... iterations to suggest a learning rate"
        return None
    finally:
        plt.close(fig)
    return float(lr)


def fastai_suggestions(funcs: dict, lrs: np.ndarray, record: list[float]) -> dict:
    num_it = lrs.shape[0]
    # Learner.lr_find: tensor(recorder.lrs[num_it//10:-5]), same for the losses,
    # then both are cut before the first NaN loss.
    t_lrs = torch.tensor(lrs[: len(record)].tolist()[num_it // 10 : -5])
    t_losses = torch.tensor(record[num_it // 10 : -5])
    nan_idxs = torch.nonzero(torch.isnan(t_losses))
    if len(nan_idxs) > 0:
        t_lrs, t_losses = t_lrs[: int(nan_idxs.min())], t_losses[: int(nan_idxs.min())]
    out = {}
    for name, func in funcs.items():
        try:
            lr, _ = func(t_lrs, t_losses, num_it)
        except (IndexError, ValueError, RuntimeError):
            out[name] = None
            continue
        out[name] = float(lr)
    out["sliced_lrs"] = t_lrs.double().tolist()
    return out


def smooth(raw: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Debiased exponential moving average (fastai's ``AvgSmoothLoss``)."""
    out = np.empty_like(raw)
    avg = 0.0
    for i, value in enumerate(raw):
        avg = beta * avg + (1 - beta) * value
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def u_shape(log_lr: np.ndarray, center: float = -3.0, blowup: float = -0.5) -> np.ndarray:
    """Flat, then a drop around ``center``, then an explosion past ``blowup``."""
    drop = 1.5 / (1 + np.exp(-(log_lr - center) * 2.5))
    return 2.3 - drop + np.exp(3 * (log_lr - blowup))


def make_curves() -> dict[str, tuple[np.ndarray, np.ndarray, dict | None]]:
    rng = np.random.default_rng(20261123)
    lrs = np.geomspace(1e-7, 10.0, 100)
    x = np.log10(lrs)
    curves = {}
    curves["u_shape"] = (lrs, smooth(u_shape(x) + 0.05 * rng.standard_normal(100)))
    diverged = smooth(u_shape(x, blowup=-1.5) + 0.05 * rng.standard_normal(100))
    diverged[80:] = np.nan
    curves["u_shape_diverged"] = (lrs, diverged)
    curves["raw_noisy"] = (lrs, u_shape(x) + 0.08 * rng.standard_normal(100))
    plateau = 2.3 - 1.2 / (1 + np.exp(-(x + 5) * 4)) + np.exp(3 * (x - 0.3))
    curves["plateau"] = (lrs, smooth(plateau + 0.002 * rng.standard_normal(100)))
    curves["monotone_decreasing"] = (lrs, 2.3 - 0.1 * (x + 7) - 0.01 * (x + 7) ** 2)
    two = 2.3 - 0.6 / (1 + np.exp(-(x + 5) * 3)) - 0.8 / (1 + np.exp(-(x + 2) * 3))
    two += 0.5 * np.exp(-((x + 3.5) ** 2) * 2) + np.exp(3 * (x - 0.5))
    curves["two_valleys"] = (lrs, smooth(two + 0.03 * rng.standard_normal(100)))
    short_lrs = np.geomspace(1e-5, 1.0, 20)
    curves["short"] = (short_lrs, u_shape(np.log10(short_lrs), center=-3.0, blowup=-0.3))
    tiny_lrs = np.geomspace(1e-5, 1.0, 16)
    curves["too_short"] = (tiny_lrs, u_shape(np.log10(tiny_lrs)))
    # Started too hot: after lr_find's trim the curve dips once, then only rises.
    hot_lrs = np.geomspace(1e-2, 10.0, 40)
    hot = 2.0 + 0.05 * np.arange(40.0) ** 1.5
    hot[hot_lrs.shape[0] // 10] += 0.2
    curves["valley_edge_bug"] = (hot_lrs, hot)
    lin_lrs = np.linspace(1e-3, 1.0, 100)
    curves["linear_ramp"] = (lin_lrs, smooth(u_shape(np.log10(lin_lrs), -1.2, 0.2)))
    ends = {"u_shape_diverged": {"kind": "stopped", "step": 79}}
    # Curves whose loss turns NaN or inf (a second generator: the curves above stay as they were).
    rng = np.random.default_rng(20260512)
    noisy_u = [smooth(u_shape(x, blowup=b) + 0.05 * rng.standard_normal(100)) for b in (-0.5, 1.5)]
    # Falls ever faster until it overflows: the steepest point is at the end of the record.
    falling = 2.3 - 0.05 * (x + 7) ** 2
    for name, kind, step, base in [
        ("nan_tail", "nan", 60, noisy_u[0]),
        ("nan_late", "nan", 97, noisy_u[1]),
        ("nan_early", "nan", 16, noisy_u[0]),
        ("inf_end", "inf", 70, noisy_u[0]),
        ("inf_falling", "inf", 70, falling),
    ]:
        curve = base.copy()
        curve[step] = np.nan if kind == "nan" else np.inf
        curve[step + 1 :] = np.nan
        curves[name] = (lrs, curve)
        ends[name] = {"kind": kind, "step": step}
    return {
        name: (
            x.astype(np.float32).astype(np.float64),
            y.astype(np.float32).astype(np.float64),
            ends.get(name),
        )
        for name, (x, y) in curves.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fastai", required=True, help="fastai wheel or schedule.py path")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    funcs = load_fastai_functions(args.fastai)
    records = {}
    for name, (lrs, losses, end) in make_curves().items():
        record = history(losses, end)
        fastai = fastai_suggestions(funcs, lrs, record)
        sliced = fastai.pop("sliced_lrs")
        valley_index = sliced.index(fastai["valley"]) if fastai["valley"] is not None else None
        if name == "valley_edge_bug" and valley_index != len(sliced) - 1:
            raise SystemExit("valley_edge_bug no longer hits fastai's wrap-around")
        records[name] = {
            "lrs": lrs.tolist(),
            # JSON has no NaN or inf: non-finite losses are stored as null (see "end").
            "losses": [v if np.isfinite(v) else None for v in losses.tolist()],
            "end": end,
            "record_length": len(record),
            "torch_lr_finder": {"steepest": torch_lr_finder_steepest(lrs, record)},
            "fastai": fastai,
            "fastai_valley_index": valley_index,
            "fastai_num_points": len(sliced),
        }
    meta = {
        "generator": "scripts/gen_suggest_goldens.py",
        "torch": torch.__version__,
        "fastai_source": pathlib.Path(args.fastai).name,
        "note": "suggested lr per curve (null: the reference raised, i.e. too few points); "
        "end: how the curve ends (null: never; stopped: the test stopped after step; "
        "nan/inf: the loss at step is NaN/inf, NaN after it)",
    }
    path = pathlib.Path(args.out)
    path.write_text(json.dumps({"meta": meta, "curves": records}, indent=1) + "\n")
    print(f"wrote {path}")
    for name, rec in records.items():
        print(f"{name:20s}", rec["torch_lr_finder"], rec["fastai"], rec["fastai_valley_index"])


if __name__ == "__main__":
    main()
