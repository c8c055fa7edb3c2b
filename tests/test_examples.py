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


def test_smith_workflow_quick(capsys):
    assert _load("smith_workflow").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "16 lanes" in out
    picked = re.search(r"best lane \d+: weight_decay=([\d.e-]+), momentum=([\d.]+)", out)
    assert picked is not None
    assert float(picked.group(2)) in (0.85, 0.9, 0.95, 0.99)
    max_lr = float(re.search(r"max LR ([\d.e-]+)", out).group(1))
    assert 1e-5 < max_lr < 10.0
    assert _final_accuracy(out) > 30.0  # well above chance (10%) after two epochs


@pytest.mark.parametrize("name", ["flax_nnx_range_test", "flax_linen_range_test"])
def test_flax_examples_quick(name, capsys):
    pytest.importorskip("flax")
    assert _load(name).main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"max LR [\d.e-]+", out)
    assert out.count("epoch ") == 2
    assert _final_accuracy(out) > 30.0


def test_train_step_example_quick(capsys):
    pytest.importorskip("flax")
    assert _load("train_step_range_test").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "Flax linen TrainState" in out and "Flax NNX nnx.Optimizer" in out
    lanes = re.findall(r"weight_decay=([\d.e-]+)\s+valley LR ([\d.e-]+|nan)", out)
    assert [wd for wd, _ in lanes] == ["0.1", "0.01", "0.0001"] * 2
    picks = [
        float(re.search(r"valley LR ([\d.e-]+) \(ran", line).group(1))
        for line in out.splitlines()
        if "best lane" in line
    ]
    assert len(picks) == 2 and all(1e-5 < lr < 10.0 for lr in picks)
    val_loss = float(re.search(r"lowest test loss during the test: ([\d.]+)", out).group(1))
    assert val_loss < np.log(10)  # below chance: validation ran on the lanes' states
    assert out.count("  epoch ") == 2
    assert _final_accuracy(out) > 30.0
