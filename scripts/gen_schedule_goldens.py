"""Writes tests/data/schedule_goldens.json from PyTorch's LR schedulers.

Run by hand (never needed by the tests) in an environment with the pinned
PyTorch, e.g. the project's ``bench`` extra (``torch==2.13.0``)::

    pip install -e ".[bench]"
    python scripts/gen_schedule_goldens.py

Each entry records the learning rate (and, for CyclicLR and OneCycleLR, the
momentum the scheduler writes into the optimizer) after ``t`` calls of
``scheduler.step()``, for the listed steps. The optimizer holds a float64
parameter; PyTorch computes the schedule in Python floats (float64).
"""

from __future__ import annotations

import json
import pathlib
import warnings

import torch
from torch.optim import lr_scheduler

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "schedule_goldens.json"

# Custom CyclicLR scale functions, written so the same expression works on
# Python floats and jnp arrays; the tests map each name to the same expression.
SCALE_FNS = {
    "inverse_linear": lambda x: 1.0 / (1.0 + 0.1 * x),
}

CYCLIC = [
    dict(base_lr=0.1, max_lr=1.0, step_size_up=4),
    dict(base_lr=0.001, max_lr=0.1, step_size_up=3, step_size_down=7),
    dict(base_lr=0.01, max_lr=0.5, step_size_up=5, step_size_down=3, mode="triangular2"),
    dict(base_lr=0.02, max_lr=0.2, step_size_up=4, mode="exp_range", gamma=0.97),
    dict(base_lr=0.1, max_lr=1.0, step_size_up=1, mode="triangular2"),
    dict(base_lr=0.1, max_lr=1.0, step_size_up=1, step_size_down=2, mode="exp_range", gamma=0.9),
    dict(base_lr=0.0, max_lr=1.0, step_size_up=4, step_size_down=6, scale_fn="inverse_linear"),
    dict(
        base_lr=0.05,
        max_lr=0.5,
        step_size_up=3,
        scale_fn="inverse_linear",
        scale_mode="iterations",
    ),
    dict(base_lr=1.0, max_lr=0.2, step_size_up=2, step_size_down=5),  # inverted cycle
    dict(base_lr=1e-4, max_lr=1e-2, step_size_up=2000, step_size_down=1500, mode="triangular2"),
]

# Recorded up to step 30,000: gamma**t at large t is sensitive to how gamma is rounded.
LONG_CYCLIC = [
    dict(base_lr=0.001, max_lr=0.006, step_size_up=2000, mode="exp_range", gamma=0.99994),
]

ONE_CYCLE = [
    dict(total_steps=100, max_lr=1.0),
    dict(total_steps=100, max_lr=0.1, pct_start=0.25, anneal_strategy="linear"),
    dict(total_steps=100, max_lr=1.0, three_phase=True),
    dict(total_steps=50, max_lr=0.3, pct_start=0.4, anneal_strategy="linear", three_phase=True),
    dict(total_steps=1, max_lr=1.0),
    dict(total_steps=2, max_lr=1.0),
    dict(total_steps=3, max_lr=1.0, anneal_strategy="linear"),
    dict(total_steps=5, max_lr=2.0, pct_start=0.5, div_factor=10.0, final_div_factor=100.0),
    dict(total_steps=3, max_lr=1.0, three_phase=True),
    dict(total_steps=10, max_lr=1.0, pct_start=0.7, three_phase=True),
    dict(
        total_steps=100_000,
        max_lr=0.4,
        pct_start=0.15,
        base_momentum=0.8,
        max_momentum=0.99,
    ),
]

WARM_RESTARTS = [
    dict(base_lr=0.1, t_0=5, t_mult=1, eta_min=0.01),
    dict(base_lr=1.0, t_0=1, t_mult=1),
    dict(base_lr=0.1, t_0=3, t_mult=2),
    dict(base_lr=1.0, t_0=1, t_mult=2, eta_min=0.001),
    dict(base_lr=0.5, t_0=2, t_mult=3, eta_min=0.05),
    dict(base_lr=0.05, t_0=10, t_mult=2),
    dict(base_lr=0.05, t_0=10, t_mult=4, eta_min=1e-10),  # PyTorch's own test with T_mult=4
]


def _optimizer(lr: float = 1.0) -> torch.optim.SGD:
    param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    return torch.optim.SGD([param], lr=lr, momentum=0.9)


def _steps(last: int, boundaries: list[float]) -> list[int]:
    """All steps up to ``last`` when few, else a stride plus steps near boundaries."""
    if last <= 400:
        return list(range(last + 1))
    picked = set(range(0, last + 1, max(1, last // 200)))
    for b in boundaries:
        for d in (-2, -1, 0, 1, 2):
            s = int(b) + d
            if 0 <= s <= last:
                picked.add(s)
    picked.add(last)
    return sorted(picked)


def _record(scheduler, optimizer, steps: list[int], momentum: bool) -> dict:
    wanted = set(steps)
    lrs, moms = [], []
    for t in range(max(steps) + 1):
        if t > 0:
            optimizer.step()
            scheduler.step()
        if t in wanted:
            lrs.append(scheduler.get_last_lr()[0])
            moms.append(optimizer.param_groups[0]["momentum"])
    out = {"steps": steps, "lr": lrs}
    if momentum:
        out["momentum"] = moms
    return out


def cyclic(kwargs: dict, last: int | None = None) -> dict:
    """Records CyclicLR up to step ``last`` (default: three cycles and a bit)."""
    args = dict(kwargs)
    name = args.pop("scale_fn", None)
    up = args["step_size_up"]
    down = args.get("step_size_down") or up
    total = up + down
    if last is None:
        last = max(40, 3 * total + 3)
    opt = _optimizer()
    sched = lr_scheduler.CyclicLR(
        opt,
        scale_fn=SCALE_FNS[name] if name else None,
        base_momentum=0.8,
        max_momentum=0.9,
        **args,
    )
    bounds = [k * total + d for k in range(1, last // total + 1) for d in (0, up)]
    rec = _record(sched, opt, _steps(last, bounds), momentum=True)
    return {"kwargs": kwargs, **rec}


def one_cycle(kwargs: dict) -> dict:
    args = dict(kwargs)
    n, p = args["total_steps"], args.get("pct_start", 0.3)
    opt = _optimizer()
    sched = lr_scheduler.OneCycleLR(opt, **args)
    bounds = [p * n - 1, 2 * p * n - 2, n - 1]
    rec = _record(sched, opt, _steps(n - 1, bounds), momentum=True)
    return {"kwargs": kwargs, **rec}


def warm_restarts(kwargs: dict) -> dict:
    args = dict(kwargs)
    opt = _optimizer(args.pop("base_lr"))
    sched = lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=args.pop("t_0"), T_mult=args.pop("t_mult"), **args
    )
    t0, m = kwargs["t_0"], kwargs["t_mult"]
    bounds = [t0 * (k if m == 1 else (m**k - 1) // (m - 1)) for k in range(1, 12)]
    rec = _record(sched, opt, _steps(1000, bounds), momentum=False)
    return {"kwargs": kwargs, **rec}


def main() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = {
            "torch_version": torch.__version__,
            "scale_fns": {"inverse_linear": "1 / (1 + 0.1 * x)"},
            "cyclic": [cyclic(k) for k in CYCLIC] + [cyclic(k, 30_000) for k in LONG_CYCLIC],
            "one_cycle": [one_cycle(k) for k in ONE_CYCLE],
            "warm_restarts": [warm_restarts(k) for k in WARM_RESTARTS],
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=None, separators=(",", ":")) + "\n")
    sizes = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {sizes}")


if __name__ == "__main__":
    main()
