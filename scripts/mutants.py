"""Mutation check of the package's guard clauses: every guard must be tested.

A guard clause is an ``if`` statement whose body is a single ``raise``; they
are found with :mod:`ast` over ``clrjax/**/*.py``. For each guard the check
asks two questions:

1. **Covered**: does some test execute its ``raise``?
2. **Killed**: with the guard deleted (its condition replaced by ``False``,
   line numbers kept, in a temporary copy of the repository), does some test
   fail?

To stay affordable it runs the suite once under coverage, with one coverage
context per test, to learn which tests execute each ``raise``; then, for
each covered guard, it runs only those tests (``-x``, in a subprocess) on the
mutated copy and stops at the first failure. The working tree is never
modified, so an interrupted run (Ctrl-C) leaves nothing behind.

Usage (``make mutants`` runs the first)::

    python scripts/mutants.py                       # the whole package
    python scripts/mutants.py --module clrjax/_race.py --jobs 2
    python scripts/mutants.py --data /somewhere/.coverage --reuse

``--data FILE --reuse`` keeps the coverage run's data between runs (the run
takes as long as the suite); ``--append 'ARGS'`` adds the given tests (pytest
arguments, one quoted string) to that data, e.g. after writing a new test. Reused data is only
valid while the package's line numbers have not moved.

The file is also the pytest plugin (``-p mutants``) that names each coverage
context after the test's node id.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "clrjax"
# What the temporary copies leave out: the copies only need the code and tests.
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "_build", ".hypothesis", ".coverage*"
)


# --------------------------------------------------------------------------- plugin


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Records the lines each test runs (setup, call, teardown) under its node id."""
    import coverage

    cov = coverage.Coverage.current()
    if cov is None:
        return (yield)
    cov.switch_context(item.nodeid)
    try:
        return (yield)
    finally:
        cov.switch_context("")


def pytest_runtest_logreport(report):
    """Logs each test's phases (duration, outcome) beside the coverage data."""
    log = os.environ.get("MUTANTS_TESTS")
    if log:
        with open(log, "a") as f:
            f.write(f"{report.nodeid}\t{report.duration:.3f}\t{report.outcome}\n")


# --------------------------------------------------------------------------- guards


@dataclass
class Guard:
    """One guard clause: where it is and what covers it."""

    path: Path  # relative to the repository root
    line: int  # the ``if``'s line
    raise_line: int
    test_start: tuple[int, int]  # the condition's (line, column), 1-based line
    test_end: tuple[int, int]
    tests: list[str] = field(default_factory=list)  # node ids that execute the raise
    outcome: str = "uncovered"  # uncovered | killed | survived | error
    killer: str = ""
    detail: str = ""

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def find_guards(path: Path) -> list[Guard]:
    """The guard clauses of one module, in line order."""
    tree = ast.parse(path.read_text(), filename=str(path))
    guards = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and len(node.body) == 1:
            body = node.body[0]
            if isinstance(body, ast.Raise):
                test = node.test
                guards.append(
                    Guard(
                        path=path.relative_to(ROOT) if path.is_relative_to(ROOT) else path,
                        line=node.lineno,
                        raise_line=body.lineno,
                        test_start=(test.lineno, test.col_offset),
                        test_end=(test.end_lineno, test.end_col_offset),
                    )
                )
    return sorted(guards, key=lambda g: g.line)


def mutate(source: str, guard: Guard) -> str:
    """The source with the guard's condition replaced by ``False``, lines kept.

    Equivalent to deleting the ``if`` (or, for an ``elif``, that branch): the
    ``raise`` can no longer run. The condition's line breaks stay inside the
    parentheses, so every other line keeps its number.
    """
    lines = source.splitlines(keepends=True)
    (l0, c0), (l1, c1) = guard.test_start, guard.test_end
    # ast columns are UTF-8 byte offsets.
    first = lines[l0 - 1].encode()
    last = lines[l1 - 1].encode()
    head = first[:c0].decode()
    tail = last[c1:].decode()
    replacement = "(False" + "\n" * (l1 - l0) + ")"
    return "".join([*lines[: l0 - 1], head, replacement, tail, *lines[l1:]])


# --------------------------------------------------------------------------- coverage


def run_coverage(data: Path, pytest_args: list[str], append: bool) -> None:
    """Runs tests under coverage with one context per test, into ``data``."""
    command = [
        sys.executable,
        "-m",
        "coverage",
        "run",
        f"--data-file={data}",
        f"--source={ROOT / PACKAGE}",
        *(["--append"] if append else []),
        "-m",
        "pytest",
        "-q",
        "-p",
        "mutants",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        *pytest_args,
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(ROOT)]),
        MUTANTS_TESTS=str(test_log(data)),
    )
    if not append:
        test_log(data).unlink(missing_ok=True)
    print("coverage run:", " ".join(pytest_args) or "the whole suite", flush=True)
    start = time.monotonic()
    # The suite's own failures are not this script's business: the mapping is
    # still valid for the tests that ran.
    subprocess.run(command, cwd=ROOT, env=env, check=False)
    print(f"coverage run took {time.monotonic() - start:.0f} s", flush=True)


def test_log(data: Path) -> Path:
    """Where the coverage run logs each test's duration and outcome (beside the data)."""
    return data.with_name(data.name + ".tests")


def attach_tests(guards: list[Guard], data: Path) -> None:
    """Fills each guard's ``tests`` with the contexts that executed its raise.

    The quickest tests come first (the first failure ends a mutant's run).
    Tests that failed in the coverage run are left out: they fail with or
    without the guard.
    """
    import coverage

    seconds: dict[str, float] = {}
    failed = set()
    if test_log(data).exists():
        for line in test_log(data).read_text().splitlines():
            nodeid, duration, outcome = line.rsplit("\t", 2)
            seconds[nodeid] = seconds.get(nodeid, 0.0) + float(duration)
            if outcome == "failed":
                failed.add(nodeid)
    if failed:
        print(f"left out, failed in the coverage run: {', '.join(sorted(failed))}", flush=True)
    covdata = coverage.CoverageData(basename=str(data))
    covdata.read()
    measured = {Path(f).resolve(): f for f in covdata.measured_files()}
    by_file: dict[Path, dict[int, list[str]]] = {}
    for guard in guards:
        absolute = (ROOT / guard.path).resolve()
        if absolute not in by_file:
            name = measured.get(absolute)
            by_file[absolute] = covdata.contexts_by_lineno(name) if name else {}
        contexts = by_file[absolute].get(guard.raise_line, [])
        tests = {c for c in contexts if c and c not in failed}
        guard.tests = sorted(tests, key=lambda t: (seconds.get(t, float("inf")), t))
        if guard.tests:
            guard.outcome = "pending"


# --------------------------------------------------------------------------- mutants


def check_guard(guard: Guard, copy: Path, timeout: float) -> None:
    """Deletes the guard in ``copy``, runs its tests, restores the file."""
    target = copy / guard.path
    original = target.read_text()
    target.write_text(mutate(original, guard))
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        *guard.tests,
    ]
    try:
        result = subprocess.run(
            command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        guard.outcome, guard.detail = "killed", f"timed out after {timeout:.0f} s"
        return
    finally:
        target.write_text(original)
    output = result.stdout + result.stderr
    if result.returncode == 1:
        guard.outcome = "killed"
        failed = [ln for ln in output.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
        guard.killer = failed[0].split(" ", 1)[1].split(" - ")[0] if failed else ""
    elif result.returncode == 0:
        guard.outcome = "survived"
    else:
        guard.outcome = "error"
        guard.detail = f"pytest exit {result.returncode}: " + output.strip()[-800:]
        if result.returncode == 4:  # a node id not found: the data predates the tests
            guard.detail += "\n(stale coverage data? run again without --reuse)"


def check_all(guards: list[Guard], jobs: int, timeout: float) -> None:
    """Runs the covered guards' mutants on ``jobs`` temporary copies."""
    pending = [g for g in guards if g.outcome == "pending"]
    if not pending:
        return
    with tempfile.TemporaryDirectory(prefix="clrjax-mutants-") as tmp:
        copies: queue.Queue[Path] = queue.Queue()
        for i in range(min(jobs, len(pending))):
            copy = Path(tmp) / f"copy{i}"
            shutil.copytree(ROOT, copy, ignore=COPY_IGNORE)
            copies.put(copy)
        lock = threading.Lock()
        done = 0

        def work(guard: Guard) -> None:
            nonlocal done
            copy = copies.get()
            try:
                check_guard(guard, copy, timeout)
            finally:
                copies.put(copy)
            with lock:
                done += 1
                report_one(guard, f"[{done}/{len(pending)}] ")

        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(work, g) for g in pending]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # Ctrl-C, SIGTERM: the queued mutants do not run
                for future in futures:
                    future.cancel()
                raise


# --------------------------------------------------------------------------- report


def report_one(guard: Guard, prefix: str = "") -> None:
    n = len(guard.tests)
    text = f"{prefix}{guard.where}: {guard.outcome.upper()}"
    if guard.outcome == "killed":
        text += f" by {guard.killer or guard.detail} ({n} covering test{'s' * (n != 1)})"
    elif guard.outcome == "survived":
        text += f" ({n} covering test{'s' * (n != 1)} passed)"
    elif guard.outcome == "error":
        text += f" {guard.detail}"
    print(text, flush=True)


def summary(guards: list[Guard]) -> int:
    """Prints the summary; the exit status is 1 when a guard is not killed."""
    found = len(guards)
    covered = sum(g.outcome != "uncovered" for g in guards)
    killed = sum(g.outcome == "killed" for g in guards)
    print()
    for guard in guards:
        if guard.outcome == "uncovered":
            print(f"UNCOVERED {guard.where} (no test executes its raise)")
    for guard in guards:
        if guard.outcome in ("survived", "error"):
            print(f"{guard.outcome.upper()} {guard.where}, covered by:")
            for test in guard.tests:
                print(f"    {test}")
    pct = 100.0 * killed / found if found else 100.0
    print(
        f"\nguards found: {found}, covered: {covered}, killed: {killed} "
        f"({pct:.1f}% of all guards), not killed: {found - killed}"
    )
    return 0 if killed == found else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--module", action="append", type=Path, help="check only this module (repeatable)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel")
    parser.add_argument(
        "--data", type=Path, help="the coverage data file (default: temporary, removed after)"
    )
    parser.add_argument("--reuse", action="store_true", help="use --data as it is when it exists")
    parser.add_argument(
        "--append",
        type=shlex.split,
        metavar="'PYTEST ARGS'",
        help="run these pytest arguments (one quoted string) under coverage, adding to --data",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds one mutant's tests may take"
    )
    parser.add_argument("--list", action="store_true", help="list the guards and stop")
    args = parser.parse_args(argv)
    # A terminated run removes its temporary copies like an interrupted one.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    modules = args.module or sorted((ROOT / PACKAGE).rglob("*.py"))
    guards = [g for m in modules for g in find_guards((ROOT / m).resolve())]
    if args.list:
        for guard in guards:
            print(guard.where)
        print(f"guards found: {len(guards)}")
        return 0

    with tempfile.TemporaryDirectory(prefix="clrjax-coverage-") as tmp:
        data = (args.data or Path(tmp) / ".coverage").resolve()
        if args.append:
            run_coverage(data, args.append, append=data.exists())
        elif not (args.reuse and data.exists()):
            data.unlink(missing_ok=True)
            run_coverage(data, [], append=False)
        else:
            print(f"reusing the coverage data in {data}", flush=True)
        attach_tests(guards, data)
    for guard in guards:
        if guard.outcome == "uncovered":
            report_one(guard)
    check_all(guards, args.jobs, args.timeout)
    return summary(guards)


if __name__ == "__main__":
    sys.exit(main())
