"""Golden curves from torch-lr-finder for tests/test_range_test.py (run by hand).

Run with a Python environment, outside the repository, that has torch and
torch-lr-finder 0.2.2:

    python scripts/gen_range_test_goldens.py

A bias-free linear regression on 64 fixed examples, batches of 16 in order
(DataLoader without shuffling; torch-lr-finder restarts it every epoch),
torch.optim.SGD with momentum/weight decay, torch-lr-finder's smoothing
(smooth_f) and divergence stop (diverge_th). Writes
tests/data/range_test_goldens.json: the data, the initial weights and, per
case, the recorded learning rates and smoothed losses (the run stops at the
first diverging step, which is recorded last).
"""

import json
import pathlib

import numpy as np
import torch
from torch_lr_finder import LRFinder

CASES = [
    dict(
        name="exp_momentum_wd",
        step_mode="exp",
        start_lr=1e-3,
        end_lr=10.0,
        num_iter=60,
        momentum=0.9,
        weight_decay=1e-2,
        smooth_f=0.05,
        diverge_th=5,
    ),
    dict(
        name="linear_plain",
        step_mode="linear",
        start_lr=1e-2,
        end_lr=3.0,
        num_iter=40,
        momentum=0.0,
        weight_decay=0.0,
        smooth_f=0.2,
        diverge_th=3,
    ),
]


def main():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=64)).astype(np.float32)
    w0 = np.array([0.3, 0.1, -0.2], np.float32)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y[:, None]))
    out = {"x": x.tolist(), "y": y.tolist(), "w0": w0.tolist(), "batch_size": 16, "cases": []}
    for case in CASES:
        model = torch.nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            model.weight.copy_(torch.from_numpy(w0[None, :]))
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=case["start_lr"],
            momentum=case["momentum"],
            weight_decay=case["weight_decay"],
        )
        finder = LRFinder(model, optimizer, torch.nn.MSELoss(), device="cpu")
        loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False)
        finder.range_test(
            loader,
            start_lr=case["start_lr"],
            end_lr=case["end_lr"],
            num_iter=case["num_iter"],
            step_mode=case["step_mode"],
            smooth_f=case["smooth_f"],
            diverge_th=case["diverge_th"],
        )
        out["cases"].append(
            {**case, "lrs": finder.history["lr"], "smoothed": finder.history["loss"]}
        )
        print(case["name"], "steps recorded:", len(finder.history["lr"]))
    path = pathlib.Path(__file__).parents[1] / "tests" / "data" / "range_test_goldens.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
