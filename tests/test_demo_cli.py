"""Tests for the ``clrjax`` command line, run in-process through ``main``."""

import os
import runpy
import signal
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from clrjax.demo import _cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST_DEMO = ["demo", "--steps", "20", "--no-progress", "--hidden", "16"]


@pytest.fixture(autouse=True)
def _close_figures():
    # Before too: figures other tests left open count towards matplotlib's
    # more-than-20-figures warning, an error under this suite's filterwarnings.
    plt.close("all")
    yield
    plt.close("all")


def _table_rows(out):
    """The header and rows of the lane table (the rows end at a blank line)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("----")) + 1
    rows = []
    for line in lines[start:]:
        if not line:
            break
        rows.append(line)
    return lines[start - 2], rows


def _subparsers():
    (action,) = [a for a in _cli.build_parser()._actions if a.dest == "command"]
    return action.choices


def test_help_lists_commands_and_explains_every_option(capsys):
    assert _cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert set(_subparsers()) == {"demo", "train-demo", "schedules"}
    for command, parser in _subparsers().items():
        assert command in out
        assert _cli.main([command, "--help"]) == 0
        help_text = capsys.readouterr().out
        for action in parser._actions:
            assert action.help, action.option_strings
            for option in action.option_strings:
                assert option in help_text
    demo_options = {o for a in _subparsers()["demo"]._actions for o in a.option_strings}
    required = "--dataset --steps --start-lr --end-lr --weight-decays --momenta --seeds --method"
    assert {*required.split(), "--out", "--no-progress", "--no-plot"} <= demo_options


def test_demo_prints_lane_table_and_saves_plot(tmp_path, capsys, monkeypatch):
    out_png = tmp_path / "rt.png"
    # Without --no-progress the bar shows when stderr is a terminal.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    argv = [a for a in FAST_DEMO if a != "--no-progress"]
    assert _cli.main([*argv, "--out", str(out_png)]) == 0
    out, err = capsys.readouterr()
    assert "range test:" in err
    header, rows = _table_rows(out)
    assert header.split() == [
        "lane", "weight_decay", "momentum", "minimum", "LR", "valley", "LR", "steepest", "LR",
        "diverged", "at",
    ]  # fmt: skip
    assert len(rows) == 4
    assert [row.split()[1] for row in rows] == ["1e-3", "1e-4", "1e-5", "0"]
    assert "Suggested learning rate (minimum):" in out
    assert "momentum=0.9, lowest smoothed loss)" in out
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_demo_grid_of_momenta_and_seeds(tmp_path, capsys, monkeypatch):
    out_png = tmp_path / "grid.png"
    argv = [*FAST_DEMO, "--weight-decays", "1e-4", "0", "--momenta", "0.8", "0.9"]
    argv += ["--seeds", "2", "--method", "minimum", "--out", str(out_png)]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert _cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "range test" not in err  # --no-progress
    header, rows = _table_rows(out)
    assert "seed" in header.split()
    assert "minimum" in header.split()
    assert len(rows) == 8
    assert "Suggested learning rate (minimum):" in out
    assert out_png.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "COMMAND"),
        (
            ["demo", "--steps", "0"],
            "argument --steps: expected an integer from 1 to 100000, got '0'",
        ),
        # 1e8 steps used to abort in XLA (per-step arrays): refused up front.
        (
            ["demo", "--steps", "100000000"],
            "argument --steps: expected an integer from 1 to 100000",
        ),
        (["train-demo", "--range-test-steps", "100001"], "argument --range-test-steps"),
        (["schedules", "--steps", "100001"], "argument --steps"),
        (
            ["demo", "--out", ""],
            "argument --out: expected a .png file or an existing directory, got ''",
        ),
        (["demo", "--out", "plot"], "argument --out: expected a .png file"),
        (["train-demo", "--out", "plot.svg"], "argument --out: expected a .png file"),
        (["demo", "--steps", "ten"], "argument --steps"),
        (["demo", "--start-lr", "-1"], "argument --start-lr: expected a positive number"),
        (["demo", "--weight-decays", "-1e-4"], "argument --weight-decays"),
        (["demo", "--momenta", "1.5"], "argument --momenta: expected a number in [0, 1)"),
        (["demo", "--beta", "1"], "argument --beta: expected a number in [0, 1)"),
        (["demo", "--method", "guess"], "argument --method: invalid choice: 'guess'"),
        (["demo", "--dataset", "cifar10"], "argument --dataset: invalid choice"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_options_exit_2_with_message(argv, message, capsys):
    assert _cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_library_value_error_exits_2(capsys):
    argv = [*FAST_DEMO, "--start-lr", "1.0", "--end-lr", "0.1", "--no-plot"]
    assert _cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("clrjax demo: error:")
    assert "end_lr" in err


def test_unwritable_output_exits_1(tmp_path, capsys):
    out_png = tmp_path / "missing" / "rt.png"
    assert _cli.main([*FAST_DEMO, "--out", str(out_png)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_out_directory_gets_the_default_file_name(tmp_path, capsys):
    assert _cli.main([*FAST_DEMO, "--out", str(tmp_path)]) == 0
    written = tmp_path / "range_test.png"
    assert f"plot saved to {written}\n" in capsys.readouterr().out
    assert written.read_bytes()[:8] == PNG_MAGIC
    assert sorted(os.listdir(tmp_path)) == ["range_test.png"]
    assert not os.path.exists(f"{tmp_path}.png")


def test_failed_save_keeps_the_old_file(tmp_path):
    out_png = tmp_path / "rt.png"
    out_png.write_bytes(b"old plot")

    class HalfWrite:
        def savefig(self, path, **kwargs):
            with open(path, "wb") as f:
                f.write(b"half")
            raise OSError("disk full")

    with pytest.raises(_cli._Failure, match="disk full"):
        _cli._save_figure(HalfWrite(), str(out_png))
    assert out_png.read_bytes() == b"old plot"
    assert os.listdir(tmp_path) == ["rt.png"]


def test_train_demo_prints_table_verdict_and_saves_plot(tmp_path, capsys):
    out_png = tmp_path / "train.png"
    argv = ["train-demo", "--epochs", "1", "--seeds", "2", "--range-test-steps", "20"]
    assert _cli.main([*argv, "--no-progress", "--out", str(out_png)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("find_schedule on digits (80% of the training split")
    assert "ScheduleChoice(" in out and "decided by rung" in out
    rows = [line.split(" | ")[0] for line in out.splitlines() if line.startswith("| ")]  # no "|---"
    assert rows == ["| arm", "| baseline", "| minimum", "| find_schedule"]
    (verdict,) = [line for line in out.splitlines() if line.startswith("verdict: ")]
    assert "vs the baseline's" in verdict and "over 2 seeds (paired)" in verdict
    assert out.endswith(f"plot saved to {out_png}\n")
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_train_demo_parses_its_defaults():
    args = _cli.build_parser().parse_args(["train-demo"])
    assert (args.dataset, args.method, args.seeds, args.range_test_steps) == (
        "digits",
        "minimum",
        5,
        100,
    )
    assert args.epochs is None and args.batch_size is None and args.out == "train_demo.png"


def test_train_demo_bad_values_exit_2(capsys):
    assert _cli.main(["train-demo", "--seeds", "0"]) == 2
    assert "argument --seeds" in capsys.readouterr().err
    assert _cli.main(["train-demo", "--batch-size", "5000", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clrjax train-demo: error: batch_size must be at most 270")
    assert _cli.main(["train-demo", "--range-test-steps", "1", "--no-plot"]) == 2
    assert "range_test_steps must be an int >= 7; got 1" in capsys.readouterr().err


def test_train_demo_without_a_schedule_exits_1(capsys, monkeypatch):
    import clrjax

    def no_suggestion(*args, **kwargs):
        raise ValueError("the range test gave no suggestion on any lane")

    monkeypatch.setattr(clrjax, "find_schedule", no_suggestion)
    argv = ["train-demo", "--range-test-steps", "7", "--epochs", "1", "--seeds", "1", "--no-plot"]
    assert _cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err == (
        "clrjax train-demo: error: find_schedule failed: the range test gave no suggestion "
        "on any lane; try more --range-test-steps (now 7)\n"
    )


def test_schedules_writes_one_png_per_family(tmp_path, capsys):
    assert _cli.main(["schedules", "--out-dir", str(tmp_path), "--steps", "200"]) == 0
    names = sorted(os.listdir(tmp_path))
    assert names == [
        "exp_range.png",
        "one_cycle.png",
        "sgdr.png",
        "triangular.png",
        "triangular2.png",
    ]
    for name in names:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert _cli.main(["schedules", "--out-dir", str(tmp_path / "nope")]) == 1
    assert "nope' is not a directory" in capsys.readouterr().err


def test_missing_matplotlib_exits_1_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert _cli.main(["schedules", "--out-dir", str(tmp_path)]) == 1
    assert "pip install 'clrjax[plot]'" in capsys.readouterr().err


def test_too_short_test_gives_no_suggestion_exit_1(tmp_path, capsys):
    out_png = tmp_path / "short.png"
    argv = ["demo", "--steps", "3", "--no-progress", "--hidden", "16", "--no-plot"]
    assert _cli.main([*argv, "--out", str(out_png)]) == 1
    captured = capsys.readouterr()
    assert "gave no 'minimum' suggestion" in captured.err
    _, rows = _table_rows(captured.out)  # the table comes out all the same
    assert len(rows) == 4
    assert not out_png.exists()  # --no-plot


def test_python_m_clrjax_help():
    proc = subprocess.run(
        [sys.executable, "-m", "clrjax", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: clrjax" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "clrjax"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "required: COMMAND" in proc.stderr


# Like JAX's _xla_gc_callback: a Python function run at every garbage collection,
# where a KeyboardInterrupt is printed as "Exception ignored" and dropped.
_INTERRUPT_IN_GC_CALLBACK = """
import gc, os, signal, sys
from clrjax.demo import _cli

def interrupt(phase, info):
    frame = sys._getframe()
    while frame is not None and frame.f_code is not _cli._cmd_demo.__code__:
        frame = frame.f_back
    if frame is not None:  # the first collection while `demo` runs
        gc.callbacks.remove(interrupt)
        os.kill(os.getpid(), signal.SIGINT)

gc.callbacks.append(interrupt)
sys.exit(_cli.main())
"""


def test_interrupt_inside_gc_callback_exits_130():
    argv = [sys.executable, "-c", _INTERRUPT_IN_GC_CALLBACK, *FAST_DEMO, "--no-plot"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (130, "clrjax demo: interrupted\n")
    assert "Suggested learning rate" not in proc.stdout


def test_ctrl_c_while_running_exits_130_with_one_line():
    argv = [
        sys.executable,
        "-m",
        "clrjax",
        "demo",
        "--steps",
        "100000",
        "--no-progress",
        "--no-plot",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    header = proc.stdout.readline()  # printed once JAX is imported and the command runs
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert header.startswith("LR range test on digits")
    assert (proc.returncode, err, out) == (130, "clrjax demo: interrupted\n", "")


def test_python_m_clrjax_runs_the_command_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["clrjax", "--help"])
    monkeypatch.delitem(sys.modules, "clrjax.__main__", raising=False)  # runpy warns if imported
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("clrjax", run_name="__main__")
    assert exit_info.value.code == 0
    assert "usage: clrjax" in capsys.readouterr().out
