"""The ``clrjax`` command line (also ``python -m clrjax``).

Commands:

* ``clrjax demo``: an LR range test on an offline dataset over Smith's
  weight-decay grid; prints a table of lanes and the suggested learning rate
  and saves the plot.
* ``clrjax train-demo``: runs :func:`clrjax.find_schedule`, then trains with
  a default learning rate, the range test's suggestion and the schedule
  find_schedule returned; prints the comparison and a verdict, saves a plot.
* ``clrjax schedules``: saves one picture per schedule family.

Exit status: 0 on success; 1 when the run fails (an optional dependency is
missing, no lane gave a suggestion, an output cannot be written); 2 for bad
usage (argparse's errors and ``ValueError``s the library raises for the given
options); 130 when interrupted. Errors are printed on stderr as
``clrjax <command>: error: <message>``.

Ctrl-C: run as a program (``main()`` without ``argv``), SIGINT ends the process
at once with status 130 and the line ``clrjax <command>: interrupted`` (see
:func:`_exit_interrupted` for why it never raises ``KeyboardInterrupt``).
``main(argv)``, called from Python, leaves SIGINT alone and returns 130 when a
``KeyboardInterrupt`` reaches it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from clrjax import SUGGESTION_METHODS
from clrjax._suggest import DEFAULT_METHOD

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
MAX_STEPS = 100_000
"""The most ``--steps`` / ``--range-test-steps`` accepted; more is bad usage (exit status 2).

The range test keeps arrays over all steps: at 10^8 steps XLA ran out of memory
and aborted the process.
"""

DEMO_WEIGHT_DECAYS = (1e-3, 1e-4, 1e-5, 0.0)
DEMO_BETA = 0.9
_TABLE_METHODS = (DEFAULT_METHOD, "valley", "steepest")  # the default, fastai's, torch's
_EPILOG = (
    "exit status: 0 success; 1 the run failed (missing optional dependency, no suggestion, "
    "unwritable output); 2 bad usage or an invalid option value; 130 interrupted"
)


class _Failure(Exception):
    """A run that could not complete (exit status 1)."""


# Plot files being written (temporary names), removed when the run is interrupted.
_partial_files: set[str] = set()


def _exit_interrupted(command: str) -> NoReturn:
    """Ends the process: status 130, ``<command>: interrupted`` on stderr.

    The SIGINT handler of the command line. It never raises ``KeyboardInterrupt``:
    JAX runs a Python callback at every garbage collection and an exception raised
    there is printed as "Exception ignored" and dropped (the run then went on and
    exited 0), and unwinding to a normal exit while XLA's threads still run could
    crash the interpreter's teardown (SIGSEGV). ``os._exit`` skips the teardown;
    printed output is flushed first and a half-written plot removed (a plot
    replaces its file only once complete).
    """
    for path in list(_partial_files):
        with contextlib.suppress(OSError):
            os.unlink(path)
    # A flush can fail: a closed pipe, or the handler running inside a write.
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError):
        os.write(2, f"{command}: interrupted\n".encode())
    os._exit(EXIT_INTERRUPTED)


def _exit_on_interrupt(command: str) -> None:
    """Makes SIGINT call :func:`_exit_interrupted` (at the next Python bytecode)."""
    signal.signal(signal.SIGINT, lambda signum, frame: _exit_interrupted(command))


def _int_type(maximum: int | None = None) -> Callable[[str], int]:
    expected = "a positive integer" if maximum is None else f"an integer from 1 to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1 or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _int_type()
_step_count = _int_type(MAX_STEPS)


def _plot_path(default_name: str) -> Callable[[str], str]:
    """``--out``: a ``.png`` file, or an existing directory to hold ``default_name``."""

    def parse(text: str) -> str:
        if os.path.isdir(text):
            return os.path.join(text, default_name)
        if os.path.splitext(text)[1].lower() != ".png":
            raise argparse.ArgumentTypeError(
                f"expected a .png file or an existing directory, got {text!r}"
            )
        return text

    return parse


def _float_type(name: str, accept: Callable[[float], bool]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}")
        return value

    return parse


_positive_float = _float_type("a positive number", lambda v: 0 < v < float("inf"))
_non_negative_float = _float_type("a non-negative number", lambda v: 0 <= v < float("inf"))
_unit_float = _float_type("a number in [0, 1)", lambda v: 0 <= v < 1)


def _format_lr(lr: float) -> str:
    return "-" if math.isnan(lr) else f"{lr:.2e}"


def _format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: left-aligned first column, right-aligned others."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _lane_text(hparams: dict[str, Any]) -> str:
    """``"weight_decay=1e-3, momentum=0.9"``, formatted like the table."""
    from clrjax.plotting._style import _format_value

    return ", ".join(f"{k}={_format_value(v)}" for k, v in hparams.items())


def _lane_table(result: Any, methods: Sequence[str]) -> str:
    """One row per lane: hyperparameters, suggested LRs, divergence step."""
    import numpy as np

    from clrjax.plotting._style import _format_value

    names = list(result.hparams)
    picks = {m: result.suggest(m) for m in methods}
    headers = ["lane", *names, *(f"{m} LR" for m in methods), "diverged at"]
    rows = []
    for lane in range(result.num_lanes):
        step = int(result.diverged_at[lane])
        diverged = f"step {step} (LR {result.lrs[step]:.1e})" if step >= 0 else "-"
        rows.append(
            [
                str(lane),
                *(_format_value(np.asarray(result.hparams[n])[lane].item()) for n in names),
                *(_format_lr(float(picks[m][lane])) for m in methods),
                diverged,
            ]
        )
    return _format_table(headers, rows)


def _check_writable(path: str) -> None:
    """Fails early when the directory of an output file does not exist."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise _Failure(f"cannot write {path!r}: directory {directory!r} does not exist")


def _save_figure(fig: Any, path: str) -> None:
    """Saves a PNG atomically: a temporary file next to ``path`` replaces it."""
    _check_writable(path)
    partial = f"{path}.{os.getpid()}.tmp"
    _partial_files.add(partial)
    try:
        fig.savefig(partial, format="png", dpi=120, bbox_inches="tight")
        os.replace(partial, path)
    except OSError as e:
        raise _Failure(f"cannot write {path!r}: {e}") from e
    finally:
        _partial_files.discard(partial)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


def _cmd_demo(args: argparse.Namespace) -> int:
    import clrjax
    from clrjax import plotting
    from clrjax.demo import _data as _demo_data

    if not args.no_plot:
        _check_writable(args.out)
    data = _demo_data.load_dataset(args.dataset)
    sizes = (data.x_train.shape[1], *args.hidden, data.num_classes)
    grid = {"weight_decay": list(args.weight_decays), "momentum": list(args.momenta)}
    seeds = list(range(args.seeds)) if args.seeds > 1 else None
    num_lanes = len(args.weight_decays) * len(args.momenta) * args.seeds
    print(
        f"LR range test on {args.dataset} ({len(data.x_train)} training examples), "
        f"MLP {'-'.join(map(str, sizes))}, SGD: {num_lanes} lanes x {args.steps} steps, "
        f"LR {args.start_lr:g} -> {args.end_lr:g}, batch {args.batch_size}"
    )
    start = time.perf_counter()
    result = clrjax.range_test(
        _demo_data.mlp_loss,
        None,
        (data.x_train, data.y_train),
        key=0,
        batch_size=args.batch_size,
        num_steps=args.steps,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        grid=grid,
        seeds=seeds,
        model=clrjax.Model(init_fn=lambda key: _demo_data.init_mlp(key, sizes)),
        curve=clrjax.Curve(beta=args.beta),
        execution=clrjax.Execution(progress=False if args.no_progress else None),
    )
    elapsed = time.perf_counter() - start
    print(f"done in {elapsed:.1f} s (compile included; strategy {result.strategy})\n")
    methods = tuple(dict.fromkeys([*_TABLE_METHODS, args.method]))
    print(_lane_table(result, methods))
    if not args.no_plot:
        title = f"LR range test: {args.dataset}, MLP, {args.steps} steps"
        if len(args.weight_decays) > 1 and len(args.momenta) > 1:
            fig = plotting.plot_range_test_grid(result, suggest=methods, title=title)
        else:
            fig = plotting.plot_range_test(result, suggest=methods, title=title).figure
        _save_figure(fig, args.out)
        print(f"\nplot saved to {args.out}")
    try:
        best = result.best(args.method)
    except ValueError as e:
        raise _Failure(f"no suggestion: {e}") from e
    if math.isnan(best.lr):
        raise _Failure(f"the lane with the lowest loss gave no {args.method!r} suggestion")
    print(
        f"\nSuggested learning rate ({args.method}): {best.lr:.2e}"
        f"  (lane {best.index}: {_lane_text(best.hparams)}, lowest smoothed loss)"
    )
    return EXIT_OK


def _cmd_train_demo(args: argparse.Namespace) -> int:
    from clrjax.demo import _comparison as _train_demo

    if not args.no_plot:
        _check_writable(args.out)
    spec = _train_demo.TASKS[args.dataset]
    epochs = spec.epochs if args.epochs is None else args.epochs
    print(
        f"find_schedule on {args.dataset} ({_train_demo.RACE_FRACTION:.0%} of the training split; "
        f"scored on the rest), then baseline vs {args.method} vs find_schedule's schedule, "
        f"{args.seeds} fresh seeds each, {epochs} epochs ..."
    )
    start = time.perf_counter()
    try:
        result = _train_demo.run_comparison(
            args.dataset,
            seeds=args.seeds,
            epochs=args.epochs,
            batch_size=args.batch_size,
            method=args.method,
            decay_arm=False,
            hand_picked=(),
            range_test_steps=args.range_test_steps,
            progress=False if args.no_progress else None,
        )
    except _train_demo.FindScheduleFailed as e:
        raise _Failure(f"{e}; try more --range-test-steps (now {args.range_test_steps})") from e
    choice = result.choice
    print(
        f"done in {time.perf_counter() - start:.1f} s (find_schedule {result.find_seconds:.1f} s; "
        f"the {args.seeds} seeds of its schedule {result.winner_seconds:.1f} s, compile "
        "included)\n"
    )
    print(f"{choice!r}\ndecided by {choice.decided_by}\n")
    print(_train_demo.format_table(result))
    print(f"\n{_train_demo.verdict(result)}")
    if not args.no_plot:
        _save_figure(_train_demo.comparison_figure(result), args.out)
        print(f"plot saved to {args.out}")
    return EXIT_OK


def _schedule_figures(num_steps: int) -> dict[str, tuple[str, Callable, Callable | None]]:
    """name -> (title, LR schedule, momentum schedule or None) of the pictures."""
    import clrjax

    half = max(num_steps // 8, 1)  # four cycles
    gamma = 0.5 ** (1 / (2 * half))  # exp_range: the amplitude halves every cycle
    t_0 = max(-(-num_steps // 7), 1)  # SGDR cycles of t_0, 2 t_0, 4 t_0 steps
    return {
        "triangular": (
            f"triangular: base_lr=1e-3, max_lr=1e-2, step_size_up={half}",
            clrjax.triangular_schedule(1e-3, 1e-2, step_size_up=half),
            None,
        ),
        "triangular2": (
            f"triangular2: step_size_up={half}, amplitude halves every cycle",
            clrjax.triangular2_schedule(1e-3, 1e-2, step_size_up=half),
            None,
        ),
        "exp_range": (
            f"exp_range: step_size_up={half}, gamma={gamma:.5f}",
            clrjax.exp_range_schedule(1e-3, 1e-2, step_size_up=half, gamma=gamma),
            None,
        ),
        "one_cycle": (
            f"one-cycle: max_lr=1e-2, total_steps={num_steps}, momentum 0.95 -> 0.85 -> 0.95",
            clrjax.one_cycle_schedule(num_steps, 1e-2),
            clrjax.one_cycle_momentum_schedule(num_steps),
        ),
        "sgdr": (
            f"SGDR (cosine warm restarts): base_lr=1e-2, t_0={t_0}, t_mult=2",
            clrjax.cosine_warm_restarts_schedule(1e-2, t_0, t_mult=2),
            None,
        ),
    }


def _cmd_schedules(args: argparse.Namespace) -> int:
    from clrjax import plotting
    from clrjax.plotting._style import _pyplot

    plt = _pyplot()
    if not os.path.isdir(args.out_dir):
        raise _Failure(f"--out-dir {args.out_dir!r} is not a directory")
    for name, (title, lr, momentum) in _schedule_figures(args.steps).items():
        fig, ax = plt.subplots(figsize=(6.0, 3.0))
        plotting.plot_schedule(lr, args.steps, ax=ax, momentum=momentum)
        ax.set_title(title)
        path = os.path.join(args.out_dir, f"{name}.png")
        _save_figure(fig, path)
        plt.close(fig)
        print(path)
    return EXIT_OK


def _add_common(
    parser: argparse.ArgumentParser,
    out: str,
    method: str = DEFAULT_METHOD,
    method_help: str = "LR suggestion method for the overall pick (see clrjax.suggest; "
    "default: %(default)s)",
) -> None:
    parser.add_argument(
        "--dataset",
        choices=("digits", "mnist1d"),
        default="digits",
        help="offline dataset: scikit-learn's 8x8 digits or mnist1d (default: %(default)s)",
    )
    parser.add_argument("--method", choices=SUGGESTION_METHODS, default=method, help=method_help)
    parser.add_argument(
        "--out",
        type=_plot_path(out),
        default=out,
        help=f"the plot: a .png file, or an existing directory to hold {out} "
        "(default: %(default)s)",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not plot (no matplotlib needed)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``clrjax`` command."""
    parser = argparse.ArgumentParser(
        prog="clrjax",
        description=(
            "Cyclical learning rates, one-cycle schedules and a vmapped LR range test "
            "for JAX + Optax. `clrjax COMMAND --help` explains each command's options."
        ),
        epilog=_EPILOG,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="LR range test over a weight-decay grid: table + plot",
        description=(
            "Runs one LR range test on an offline dataset with a small MLP and SGD, every "
            "(weight decay, momentum, seed) combination a lane of one compiled program. "
            "Prints each lane's suggested learning rates and where it diverged, then the "
            "suggestion of the lane reaching the lowest loss, and saves the plot."
        ),
        epilog=_EPILOG,
    )
    _add_common(demo, "range_test.png")
    demo.set_defaults(run=_cmd_demo)
    demo.add_argument(
        "--batch-size", type=_positive_int, default=128, help="mini-batch size (default: 128)"
    )
    demo.add_argument(
        "--steps",
        type=_step_count,
        default=200,
        help=f"range-test steps, at most {MAX_STEPS} (default: %(default)s)",
    )
    demo.add_argument(
        "--start-lr", type=_positive_float, default=1e-5, help="first LR (default: %(default)g)"
    )
    demo.add_argument(
        "--end-lr", type=_positive_float, default=10.0, help="last LR (default: %(default)g)"
    )
    demo.add_argument(
        "--weight-decays",
        type=_non_negative_float,
        nargs="+",
        default=list(DEMO_WEIGHT_DECAYS),
        metavar="WD",
        help="weight decays to compare, Smith's grid by default: 1e-3 1e-4 1e-5 0",
    )
    demo.add_argument(
        "--momenta",
        type=_unit_float,
        nargs="+",
        default=[0.9],
        metavar="M",
        help="SGD momenta to compare (default: 0.9); several momenta and weight decays "
        "give one panel per pair",
    )
    demo.add_argument(
        "--seeds",
        type=_positive_int,
        default=1,
        help="initialisation seeds per configuration; more than 1 adds a seed column "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        default=[128],
        metavar="WIDTH",
        help="hidden layer widths of the MLP (default: 128)",
    )
    demo.add_argument(
        "--beta",
        type=_unit_float,
        default=DEMO_BETA,
        help="EMA coefficient of the smoothed loss (default: %(default)s; the library's "
        "default, fastai's 0.98, lags about 50 steps, too long for a 200-step ramp over "
        "six decades)",
    )
    demo.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (otherwise shown when tqdm is installed and stderr is a terminal)",
    )

    train = commands.add_parser(
        "train-demo",
        help="does find_schedule pay off? a default LR vs the suggestion vs find_schedule",
        description=(
            "Runs clrjax.find_schedule on 80% of the demo dataset's training split (scored by "
            "accuracy on the other 20%), then trains the demo MLP (SGD + Nesterov) with a common "
            "default learning rate (0.01), with the range test's suggestion held constant and "
            "with the schedule find_schedule returned, on the whole training split with fresh "
            "seeds; prints test accuracy per arm and a verdict, and saves a plot."
        ),
        epilog=_EPILOG,
    )
    _add_common(
        train,
        "train_demo.png",
        method="minimum",
        method_help="suggestion method of the constant arm (default: %(default)s)",
    )
    train.set_defaults(run=_cmd_train_demo)
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="mini-batch size (default: per dataset, 32 digits, 128 mnist1d)",
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="epochs, the budget find_schedule plans for (default: 30 digits, 60 mnist1d)",
    )
    train.add_argument(
        "--seeds", type=_positive_int, default=5, help="seeds per arm (default: %(default)s)"
    )
    train.add_argument(
        "--range-test-steps",
        type=_step_count,
        default=100,
        help=f"steps of find_schedule's range test, at most {MAX_STEPS} (default: %(default)s)",
    )
    train.add_argument(
        "--no-progress",
        action="store_true",
        help="do not print find_schedule's stages (otherwise printed when stderr is a terminal)",
    )

    schedules = commands.add_parser(
        "schedules",
        help="save one picture per schedule family (the README's figures)",
        description="Saves triangular, triangular2, exp_range, one_cycle and sgdr PNGs.",
        epilog=_EPILOG,
    )
    schedules.set_defaults(run=_cmd_schedules)
    schedules.add_argument(
        "--out-dir", default=".", help="directory for the PNGs (default: current directory)"
    )
    schedules.add_argument(
        "--steps",
        type=_step_count,
        default=1000,
        help=f"steps drawn, at most {MAX_STEPS} (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (argparse's included).

    Args:
      argv: the arguments after the program name. ``None`` (the console script,
        ``python -m clrjax``) reads ``sys.argv`` and runs as the program: SIGINT
        then ends the process with status 130 (see :func:`_exit_interrupted`).
        Given a list, SIGINT handling is left alone and a ``KeyboardInterrupt``
        reaching ``main`` returns 130.
    """
    as_program = argv is None
    if as_program:
        _exit_on_interrupt("clrjax")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if as_program:
        _exit_on_interrupt(f"clrjax {args.command}")
    prefix = f"clrjax {args.command}: error:"
    try:
        return args.run(args)
    except ValueError as e:
        print(f"{prefix} {e}", file=sys.stderr)
        return EXIT_USAGE
    except (_Failure, ImportError) as e:
        print(f"{prefix} {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"clrjax {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
