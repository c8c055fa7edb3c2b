"""Writes tests/data/suggest_goldens.json: the reference suggestions on fixed curves.

Run by hand with the torch environment (never by the tests):

    pip download fastai --no-deps -d /tmp/fastai_wheel
    /work/torchenv/bin/python scripts/gen_suggest_goldens.py \
        --fastai /tmp/fastai_wheel/fastai-2.8.12-py3-none-any.whl

References, run on each curve:

* torch-lr-finder (installed): a real ``LRFinder`` around a dummy model, its
  ``history`` set to the curve, then ``plot(suggest_lr=True)`` with default
  skips under matplotlib's Agg backend; the returned lr is the golden.
* fastai: importing fastai needs torchvision and more, so instead the source
  of its four suggestion functions (``valley``, ``slide``, ``minimum``,
  ``steep``) is read at run time from ``fastai/callback/schedule.py`` inside
  the wheel (or a checkout's file) given with ``--fastai`` and executed with
  torch and NumPy. No fastai code is stored in this repository. The trimming
  and NaN drop of ``Learner.lr_find`` (``[num_it // 10 : -5]``, then cut at the
  first NaN) are reproduced here before calling them, with
  ``torch.tensor`` of Python floats (float32), as ``lr_find`` does.

Both references stop a test when it diverges, so their history ends where our
lanes turn NaN: each reference is given the finite prefix of a curve. Curves
are stored rounded to float32, so the float32 references and clrjax (float64)
compare the same numbers.
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


def torch_lr_finder_steepest(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    model = torch.nn.Linear(1, 1)
    finder = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-7), torch.nn.MSELoss())
    stop = finite_prefix(losses)
    finder.history = {"lr": lrs[:stop].tolist(), "loss": losses[:stop].tolist()}
    fig, ax = plt.subplots()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            _, lr = finder.plot(suggest_lr=True, ax=ax)
    except RuntimeError:  # "Need at least ... iterations to suggest a learning rate"
        return None
    finally:
        plt.close(fig)
    return float(lr)


def fastai_suggestions(funcs: dict, lrs: np.ndarray, losses: np.ndarray) -> dict:
    num_it = lrs.shape[0]
    stop = finite_prefix(losses)
    # Learner.lr_find: tensor(recorder.lrs[num_it//10:-5]), same for losses.
    t_lrs = torch.tensor(lrs[:stop].tolist()[num_it // 10 : -5])
    t_losses = torch.tensor(losses[:stop].tolist()[num_it // 10 : -5])
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


def make_curves() -> dict[str, tuple[np.ndarray, np.ndarray]]:
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
    return {
        name: (x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64))
        for name, (x, y) in curves.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fastai", required=True, help="fastai wheel or schedule.py path")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    funcs = load_fastai_functions(args.fastai)
    records = {}
    for name, (lrs, losses) in make_curves().items():
        fastai = fastai_suggestions(funcs, lrs, losses)
        sliced = fastai.pop("sliced_lrs")
        valley_index = sliced.index(fastai["valley"]) if fastai["valley"] is not None else None
        if name == "valley_edge_bug" and valley_index != len(sliced) - 1:
            raise SystemExit("valley_edge_bug no longer hits fastai's wrap-around")
        records[name] = {
            "lrs": lrs.tolist(),
            # JSON has no NaN: the diverged tail is stored as null.
            "losses": [None if np.isnan(v) else v for v in losses.tolist()],
            "torch_lr_finder": {"steepest": torch_lr_finder_steepest(lrs, losses)},
            "fastai": fastai,
            "fastai_valley_index": valley_index,
            "fastai_num_points": len(sliced),
        }
    meta = {
        "generator": "scripts/gen_suggest_goldens.py",
        "torch": torch.__version__,
        "fastai_source": pathlib.Path(args.fastai).name,
        "note": "suggested lr per curve (null: the reference raised, i.e. too few points)",
    }
    path = pathlib.Path(args.out)
    path.write_text(json.dumps({"meta": meta, "curves": records}, indent=1) + "\n")
    print(f"wrote {path}")
    for name, rec in records.items():
        print(f"{name:20s}", rec["torch_lr_finder"], rec["fastai"], rec["fastai_valley_index"])


if __name__ == "__main__":
    main()
