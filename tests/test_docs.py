"""The documentation agrees with the code.

* The API reference (docs/conf.py writes its pages from ``__all__``) has a page for every
  public name.
* Every default the docs state for a keyword is the keyword's default in the signature.
  Statements are found by a small explicit parser, in three forms:

  1. a Google docstring's ``Args:``/``Attributes:`` entry saying ``default X`` or
     ``X (default)`` (X a Python literal), checked against that callable's own signature;
  2. a code span ``kw=X`` followed by ``(default``, ``(the default`` or ``, the default``, in a
     docstring (checked against that callable) or in a markdown page (checked against every
     public callable that has ``kw``: at least one must default to X);
  3. a signature-like code span, ``name(..., kw=X, ..., **kw)`` (a ``*`` or ``**`` parameter
     marks it as a signature, not a call), checked against the public callables called
     ``name`` (a ``Class.name`` qualifier narrows to that class).

  A statement whose X is not a literal (``default: all at once``,
  ``default ``len(data) // batch_size````) is not a statement of a default value and is skipped.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import pathlib
import re
from collections.abc import Callable, Iterator

import pytest

import clrjax
import clrjax.plotting

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
PUBLIC_MODULES = (clrjax, clrjax.plotting)
# Qualifiers of calls to other libraries (``optax.sgd(momentum=None, *, ...)``): not ours.
FOREIGN = {"optax", "jax", "jnp", "np", "numpy", "torch", "fastai", "flax", "nnx", "eqx", "plt"}


def _load_conf():
    spec = importlib.util.spec_from_file_location("clrjax_docs_conf", ROOT / "docs" / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def test_api_pages_cover_every_public_name():
    pages = _load_conf().api_pages()
    index = pages["index.rst"]
    names = [f"{m.__name__}.{n}" for m in PUBLIC_MODULES for n in m.__all__]
    assert "clrjax.range_test" in names and "clrjax.plotting.plot_range_test" in names
    for qualname in names:
        page = pages.get(f"{qualname}.rst", "")
        assert re.search(rf"^\.\. auto\w+:: {re.escape(qualname)}$", page, re.M), qualname
        assert index.count(f"\n   ~{qualname}\n") == 1, f"{qualname} not in the API index's tables"
        assert f"\n   {qualname}\n" in index, f"{qualname} not in the API index's toctree"
    assert len(pages) == len(names) + 1  # no page for a name that is gone


# ---------------------------------------------------------------- the parser of stated defaults


@dataclasses.dataclass(frozen=True)
class Statement:
    """At ``where``, the docs say ``keyword`` of ``function`` (None: any) defaults to ``value``."""

    where: str
    function: str | None
    keyword: str
    value: str  # the repr of the stated value
    exact: bool = False  # ``function`` is the key of one callable (a docstring's own)


_SPAN = r"`{1,2}([^`]+?)`{1,2}"  # a markdown `span` or a reST ``literal``
# "default X" / "default is X" / "default: X" (X a span or a bare token), not "fastai's default X".
# "by default X" and "the reference's default X" describe something else.
_DEFAULT_X = re.compile(
    rf"(?<!'s )(?<!by )\bdefault(?: is|:)? +(?:{_SPAN}|([-+\w.'\"]+)(?=[\s,;.)]|$))"
)
# "(default)", "(the default; ...)", ", the default," -- not "(the default with a progress bar)".
_IS_DEFAULT = r"(?:\s*\((?:the )?default|, the default)(?=[),;:.])"
_X_DEFAULT = re.compile(_SPAN + _IS_DEFAULT)
_KW_X_DEFAULT = re.compile(r"`{1,2}(\w+)=([^`]+?)`{1,2}" + _IS_DEFAULT)
_SIGNATURE = re.compile(r"`{1,2}((?:\w+\.)*)(\w+)\(([^`]*)\)`{1,2}")
_ENTRY = re.compile(r"\*{0,2}(\w+)(?: \([^)]*\))?: ")
_SECTIONS = ("Args:", "Arguments:", "Attributes:", "Keyword Args:")


def _literal(text: str) -> str | None:
    """The repr of ``text``'s value if it is a Python literal (``None``, ``4.0``, ``"torch"``)."""
    try:
        return repr(ast.literal_eval(text.strip().rstrip(".")))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _entries(doc: str) -> Iterator[tuple[str, str]]:
    """``(name, text)`` of each entry of a Google docstring's Args/Attributes sections."""
    section, entry_indent, name, text = None, None, None, []
    for line in [*inspect.cleandoc(doc).splitlines(), "END"]:
        stripped, indent = line.strip(), len(line) - len(line.lstrip())
        if not stripped:
            continue
        starts = section is not None and indent > section and _ENTRY.match(stripped + " ")
        if starts and entry_indent is None:
            entry_indent = indent
        if name and (indent <= section or (starts and indent == entry_indent)):
            yield name, " ".join(text)
            name = None
        if stripped in _SECTIONS:
            section, entry_indent = indent, None
        elif section is not None and indent <= section:
            section = None
        elif starts and indent == entry_indent:
            name, text = starts.group(1), [stripped[starts.end() :]]
        elif name:
            text.append(stripped)


def docstring_statements(doc: str, function: str) -> list[Statement]:
    """The defaults ``function``'s docstring states (forms 1 and 2)."""
    pairs = []  # (keyword, text of the value)
    for name, text in _entries(doc):
        pairs += [(name, m.group(1) or m.group(2)) for m in _DEFAULT_X.finditer(text)]
        pairs += [(name, m.group(1)) for m in _X_DEFAULT.finditer(text) if "=" not in m.group(1)]
    pairs += [m.groups() for m in _KW_X_DEFAULT.finditer(doc)]
    found = [
        Statement(f"{function} docstring", function, keyword, _literal(value), exact=True)
        for keyword, value in pairs
        if _literal(value) is not None
    ]
    return list(dict.fromkeys(found))


def markdown_statements(text: str, page: str) -> list[Statement]:
    """The defaults a markdown page states (forms 2 and 3)."""
    found = []
    for lineno, (line, own) in enumerate(_with_next_line(text), 1):
        where = f"{page}:{lineno}"
        for m in _KW_X_DEFAULT.finditer(line):
            value = _literal(m.group(2))
            if value is not None and m.start() < own:
                found.append(Statement(where, None, m.group(1), value))
        for m in _SIGNATURE.finditer(line):
            qualifier, function, params = m.groups()
            if m.start() >= own or qualifier.split(".")[0] in FOREIGN:
                continue
            try:
                args = ast.parse(f"def f({params}): pass").body[0].args
            except SyntaxError:
                continue  # a call, not a signature
            if not (args.vararg or args.kwarg or args.kwonlyargs):
                continue  # a call such as `range_test(..., strategy="serial")`
            named = args.posonlyargs + args.args
            pairs = list(zip(named[len(named) - len(args.defaults) :], args.defaults, strict=True))
            pairs += [
                (a, d)
                for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                if d is not None
            ]
            for arg, default in pairs:
                value = _literal(ast.unparse(default))
                if value is not None:
                    found.append(Statement(where, qualifier + function, arg.arg, value))
    return found


def _with_next_line(text: str) -> list[tuple[str, int]]:
    """``(line and the next one, len(line))`` of each line: a statement may wrap once."""
    lines = text.splitlines()
    return [(f"{line} {nxt}", len(line)) for line, nxt in zip(lines, [*lines[1:], ""], strict=True)]


def public_callables() -> dict[str, Callable]:
    """``{name: callable}``: public functions, classes (their constructors) and their methods."""
    found = {}
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                found[name] = obj
            elif inspect.isclass(obj):
                found[name] = obj
                for attr in vars(obj):
                    member = getattr(obj, attr)
                    if not attr.startswith("_") and inspect.isroutine(member):
                        found[f"{name}.{attr}"] = member
    return found


def _defaults(obj: Callable) -> dict[str, object]:
    parameters = inspect.signature(obj).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _candidates(s: Statement, names: list[str]) -> list[str]:
    """The public callables ``s`` may be about."""
    if s.function is None:
        return names
    if s.exact:
        return [s.function]
    owner, _, short = s.function.rpartition(".")
    if owner in {"clrjax", "clrjax.plotting", "plotting"}:
        return [n for n in names if n == short]
    if owner.rpartition(".")[2] in names:  # `RangeTestResult.suggest(...)`
        return [n for n in names if n == f"{owner.rpartition('.')[2]}.{short}"]
    return [n for n in names if n == short or n.endswith(f".{short}")]  # `result.suggest(...)`


def mismatches(statements: list[Statement], callables: dict[str, Callable]) -> list[str]:
    """A message for each statement that no signature it may be about agrees with."""
    defaults = {name: _defaults(obj) for name, obj in callables.items()}
    problems = []
    for s in statements:
        candidates = _candidates(s, list(defaults))
        if not candidates:
            continue  # `name(...)` is not a clrjax callable
        having = {n: defaults[n][s.keyword] for n in candidates if s.keyword in defaults[n]}
        if not any(_same(actual, ast.literal_eval(s.value)) for actual in having.values()):
            about = f" of {s.function}" if s.function else ""
            problems.append(
                f"{s.where}: documents {s.keyword}={s.value} as the default{about}; "
                f"the signatures say {having or 'no such keyword'}"
            )
    return problems


def _same(actual: object, documented: object) -> bool:
    return (type(actual) is type(documented) and actual == documented) or (
        isinstance(actual, (int, float))
        and isinstance(documented, (int, float))
        and not isinstance(actual, bool)
        and not isinstance(documented, bool)
        and actual == documented
    )


def all_statements() -> list[Statement]:
    callables = public_callables()
    found = []
    for name, obj in callables.items():
        found += docstring_statements(inspect.getdoc(obj) or "", name)
    for page in PAGES:
        found += markdown_statements(page.read_text(), page.relative_to(ROOT).as_posix())
    return found


def test_documented_defaults_match_the_signatures():
    statements = all_statements()
    # The parser finds the statements the pages make (it cannot silently find nothing); the
    # docstrings state few (their signatures show the defaults): the tests below parse some.
    assert sum(s.where.startswith("docs/") for s in statements) >= 5
    assert mismatches(statements, public_callables()) == []


# ---------------------------------------------------------------- the parser itself


def _fn(a, b=1, *, mode="torch", beta=None):
    """A function.

    Args:
      a: the first (default 3).
      b: the second; default ``1``.
      mode: ``"torch"`` (default) or ``"fastai"``; fastai's default 0.5 is not ours.
      beta: the smoothing, default: tied to the ramp.

    Returns:
      Nothing (default 9 here is not an argument's).
    """


def test_docstring_parser_finds_stated_defaults():
    found = docstring_statements(_fn.__doc__, "fn")
    assert {(s.keyword, s.value) for s in found} == {("a", "3"), ("b", "1"), ("mode", "'torch'")}
    # `a` has no default, so its statement is reported; `b` and `mode` agree.
    problems = mismatches(found, {"fn": _fn})
    assert len(problems) == 1 and "a=3" in problems[0]


def test_markdown_parser_finds_stated_defaults():
    page = "\n".join(
        [
            '`mode="fastai"` (the default) picks ... and `b=1`, the default, is',
            '`RangeTestResult.suggest(method="valley", smoothed=True, **kw)` and',
            "`range_test(loss_fn, params, data, diverge_threshold=None)` is a call;",
            "`optax.sgd(momentum=None, *, nesterov=False)` is another library's.",
        ]
    )
    found = markdown_statements(page, "page.md")
    keys = {(s.function, s.keyword, s.value) for s in found}
    assert keys == {
        (None, "mode", "'fastai'"),
        (None, "b", "1"),
        ("RangeTestResult.suggest", "method", "'valley'"),
        ("RangeTestResult.suggest", "smoothed", "True"),
    }
    problems = mismatches(found, {**public_callables(), "fn": _fn})
    assert len(problems) == 2
    assert any("mode='fastai'" in p for p in problems)
    assert any("method='valley'" in p and "RangeTestResult.suggest" in p for p in problems)


@pytest.mark.parametrize("text", ["all at once", "``len(data) // batch_size``", ":func:`f`"])
def test_a_default_that_is_not_a_literal_is_no_statement(text):
    assert docstring_statements(f"Args:\n  x: the x (default {text}).\n", "f") == []
