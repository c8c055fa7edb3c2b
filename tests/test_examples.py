"""Smoke tests: every example runs end to end in its ``--quick`` mode."""

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    """Imports examples/<name>.py as a module (registered, as dataclasses and linen need)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _final_accuracy(out):
    return float(re.search(r"final test accuracy ([\d.]+)%", out).group(1))


def test_seed_claim_quick_writes_results_page(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    seed_claim = _load("seed_claim")
    assert seed_claim.main(["--quick", "--datasets", "digits", "--out-dir", str(tmp_path)]) == 0
    page = (tmp_path / "results.md").read_text()
    assert page.startswith("# Does the range test pay off?")
    assert "`python examples/seed_claim.py --quick --datasets digits`" in page
    assert "## digits" in page and "## mnist1d" not in page
    assert "| baseline | 0.01 |" in page
    assert "![digits: range test and test accuracy per arm](img/results_digits.png)" in page
    assert (tmp_path / "img" / "results_digits.png").read_bytes()[:4] == b"\x89PNG"
    assert "Where the claim reproduces" in page
    assert "wrote" in capsys.readouterr().out


def test_seed_claim_quick_refuses_to_overwrite_the_docs():
    seed_claim = _load("seed_claim")
    with pytest.raises(SystemExit):
        seed_claim.main(["--quick"])


def test_seed_claim_verdict_rule():
    seed_claim = _load("seed_claim")
    mean, se = seed_claim.paired(np.array([3.0, 4.0, 5.0]), np.array([1.0, 1.0, 1.0]))
    assert mean == pytest.approx(3.0) and se == pytest.approx(np.std([2, 3, 4], ddof=1) / 3**0.5)
    assert seed_claim.holds(mean, se) is True
    assert seed_claim.holds(-mean, se) is False
    assert seed_claim.holds(0.1, 1.0) is None
    assert seed_claim.holds(*seed_claim.paired(np.array([1.0]), np.array([0.0]))) is None


def _choice(out):
    """``(kind, learning_rate, hparams text)`` of the ``ScheduleChoice`` an example printed."""
    m = re.search(r"ScheduleChoice\((one_cycle|decay), learning_rate=([\d.e-]+)(.*?), total_steps", out)
    assert m is not None, out
    return m.group(1), float(m.group(2)), m.group(3)


def test_smith_workflow_quick(capsys):
    assert _load("smith_workflow").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "16 lanes" in out
    momentum = float(re.search(r"-> momentum ([\d.]+)", out).group(1))
    assert momentum in (0.85, 0.9, 0.95, 0.99)
    assert f"Stage 2: find_schedule, momentum {momentum:g}" in out
    kind, lr, grid = _choice(out)
    assert kind == "one_cycle" and 1e-5 < lr < 10.0
    assert float(re.fullmatch(r", weight_decay=([\d.e-]+)", grid).group(1)) in (1e-3, 1e-4, 1e-5, 0)
    assert "<- winner" in out and "decided by rung" in out
    first_epoch = re.search(r"^\s+1\s+([\d.]+)\s+([\d.]+)", out, re.MULTILINE)
    assert float(first_epoch.group(1)) == pytest.approx(lr / 25, rel=0.01)  # one-cycle's start
    assert float(first_epoch.group(2)) == pytest.approx(0.95)  # its momentum's start
    assert _final_accuracy(out) > 30.0  # well above chance (10%) after two epochs


def test_flax_linen_example_quick(capsys):
    pytest.importorskip("flax")
    assert _load("flax_linen_range_test").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"valley: median LR [\d.e-]+ over 3 seeds", out)
    kind, lr, _ = _choice(out)
    assert kind == "one_cycle"
    assert f"1cycle max LR {lr:.3g} (find_schedule" in out
    assert out.count("epoch ") == 2
    assert _final_accuracy(out) > 30.0


def test_flax_nnx_example_quick(capsys):
    pytest.importorskip("flax")
    assert _load("flax_nnx_range_test").main(["--quick"]) == 0
    out = capsys.readouterr().out
    lanes = re.findall(r"range test lane weight_decay=([\d.e-]+)\s+minimum LR", out)
    assert lanes == ["0.0001", "1e-05", "0"]
    kind, lr, grid = _choice(out)
    assert f"{kind} at LR {lr:.3g} (find_schedule" in out
    assert float(re.fullmatch(r", weight_decay=([\d.e-]+)", grid).group(1)) in (1e-4, 1e-5, 0)
    assert out.count("epoch ") == 2
    assert _final_accuracy(out) > 30.0


def test_train_step_example_quick(capsys):
    pytest.importorskip("flax")
    assert _load("train_step_range_test").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "Flax linen TrainState" in out and "Flax NNX nnx.Optimizer" in out
    lanes = re.findall(r"weight_decay=([\d.e-]+)\s+minimum LR ([\d.e-]+|nan), valley LR", out)
    assert [wd for wd, _ in lanes] == ["0.1", "0.01", "0.0001"] * 2
    picks = [
        float(re.search(r"minimum LR ([\d.e-]+) \(ran", line).group(1))
        for line in out.splitlines()
        if "best lane" in line
    ]
    assert len(picks) == 2 and all(1e-5 < lr < 10.0 for lr in picks)
    val_loss = float(re.search(r"lowest validation loss during the test: ([\d.]+)", out).group(1))
    assert val_loss < np.log(10)  # below chance: validation ran on the lanes' states
    _, lr, grid = _choice(out)
    assert 1e-5 < lr < 10.0
    assert float(re.fullmatch(r", weight_decay=([\d.e-]+)", grid).group(1)) in (0.1, 0.01, 1e-4)
    assert "decided by rung" in out
    assert out.count("  epoch ") == 2
    assert _final_accuracy(out) > 30.0


def test_digits_range_test_quick(capsys):
    assert _load("digits_range_test").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "4 lanes x 30 steps" in out
    lanes = re.findall(r"weight_decay=([\d.e-]+)\s+([\d.e-]+|nan)\s", out)
    assert [wd for wd, _ in lanes] == ["0.001", "0.0001", "1e-05", "0"]
    assert all(1e-4 < float(lr) < 10.0 for _, lr in lanes)
    assert re.search(r"lowest loss: lane \d \(weight_decay=[\d.e-]+\), minimum LR [\d.e-]+", out)
