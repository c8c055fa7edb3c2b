"""Tests for scripts/mutants.py: which statements are guards, and how one is deleted."""

import importlib.util
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).parents[1] / "scripts" / "mutants.py"
spec = importlib.util.spec_from_file_location("mutants", SCRIPT)
mutants = importlib.util.module_from_spec(spec)
sys.modules.setdefault("mutants", mutants)  # dataclasses look their module up
spec.loader.exec_module(mutants)

SOURCE = """\
def f(x, y):
    if x < 0:
        raise ValueError("x")
    if (y is None
            or y < 0):
        raise ValueError("y")
    elif y > 10:
        raise ValueError("big")
    if x > 5:  # not a guard: two statements
        x = 5
        raise ValueError("five")
    return x + y
"""


@pytest.fixture
def module(tmp_path):
    path = tmp_path / "module.py"
    path.write_text(SOURCE)
    return path


def run_f(source, *args):
    namespace = {}
    exec(compile(source, "module.py", "exec"), namespace)
    return namespace["f"](*args)


def test_guards_are_ifs_whose_body_is_a_single_raise(module):
    guards = mutants.find_guards(module)
    assert [(g.line, g.raise_line) for g in guards] == [(2, 3), (4, 6), (7, 8)]
    assert guards[1].test_start == (4, 8) and guards[1].test_end == (5, 20)


CASES = [((-1, 1), "x"), ((1, -1), "y"), ((1, 11), "big")]  # what raises at each guard


@pytest.mark.parametrize("index", range(len(CASES)))
def test_a_deleted_guard_no_longer_raises_and_keeps_the_line_numbers(module, index):
    mutant = mutants.mutate(SOURCE, mutants.find_guards(module)[index])
    assert mutant.count("\n") == SOURCE.count("\n")
    for i, (args, message) in enumerate(CASES):
        with pytest.raises(ValueError, match=message):
            run_f(SOURCE, *args)
        if i == index:
            assert run_f(mutant, *args) == sum(args)
        else:  # the other guards still stand
            with pytest.raises(ValueError, match=message):
                run_f(mutant, *args)
