"""Sphinx configuration: the guides (docs/*.md, via MyST) and an API reference.

The API pages are generated from ``clrjax.__all__`` (and ``clrjax.plotting.__all__``) when the
build starts, one page per public name, so a new export appears without editing any list.
Build with ``make docs``.
"""

from __future__ import annotations

import inspect
import pathlib
import re
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # document this checkout's clrjax

import clrjax  # noqa: E402
import clrjax.plotting  # noqa: E402

project = "clrjax"
author = "clrjax developers"
copyright = "clrjax developers"
release = version = clrjax.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",  # MathJax 3 copied into the site: math renders offline too
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

# Google docstrings; the examples stay doctests (they run in the test suite).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
python_use_unqualified_type_names = True  # `RangeTestResult`, not `clrjax._result.RangeTestResult`
maximum_signature_line_length = 88  # longer signatures get one parameter per line
autosummary_generate = False  # the pages are written by `write_api_pages` below

# The guides are plain GitHub markdown: `$...$` math, `#heading` anchors as GitHub makes them.
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"clrjax {release}"

API_DIR = "api"  # generated pages, ignored by git
# The public modules, as the API index titles them.
_MODULES = (
    (clrjax, "``clrjax``"),
    (clrjax.plotting, "``clrjax.plotting`` (needs the ``plot`` extra)"),
)

# (kind, predicate) of the API index's tables, in order.
_KINDS = (
    ("Functions", lambda obj: inspect.isfunction(obj)),
    ("Classes", lambda obj: inspect.isclass(obj) and not issubclass(obj, BaseException)),
    ("Exceptions", lambda obj: inspect.isclass(obj) and issubclass(obj, BaseException)),
    ("Constants", lambda obj: not inspect.isfunction(obj) and not inspect.isclass(obj)),
)


def api_names() -> list[str]:
    """Fully qualified public names: ``clrjax.__all__`` then ``clrjax.plotting.__all__``."""
    return [f"{module.__name__}.{n}" for module, _ in _MODULES for n in module.__all__]


def _resolve(qualname: str) -> object:
    module, _, name = qualname.rpartition(".")
    return getattr(sys.modules[module], name)


def _directive(obj: object) -> str:
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return "autoexception"
    if inspect.isclass(obj):
        return "autoclass"
    if inspect.isfunction(obj):
        return "autofunction"
    return "autodata"


def _sections() -> list[tuple[str, str, list[str]]]:
    """``(module title, kind, qualified names)`` of the API index, in page order."""
    sections = []
    for module, title in _MODULES:
        for kind, keep in _KINDS:
            names = [f"{module.__name__}.{n}" for n in module.__all__ if keep(getattr(module, n))]
            if names:
                sections.append((title, kind, names))
    return sections


def api_pages() -> dict[str, str]:
    """``{file name: reST}`` of the API pages: an index with one table per kind, a page per name."""
    pages = {}
    for qualname in api_names():
        obj = _resolve(qualname)
        directive = _directive(obj)
        title = qualname.removeprefix("clrjax.")
        options = "   :members:\n" if directive == "autoclass" else ""
        if hasattr(obj, "_fields"):  # a NamedTuple: its docstring's Attributes document the fields
            options += f"   :exclude-members: {', '.join(obj._fields)}\n"
        pages[f"{qualname}.rst"] = (
            f"{title}\n{'=' * len(title)}\n\n.. {directive}:: {qualname}\n{options}"
        )
    index = ["API reference", "=============", ""]
    toctree = []
    last_title = None
    for title, kind, names in _sections():
        if title != last_title:
            index += [title, "-" * len(title), ""]
            last_title = title
        index += [f".. rubric:: {kind}", "", ".. autosummary::", ""]
        index += [f"   ~{q}" for q in names] + [""]
        toctree += names
    index += [".. toctree::", "   :hidden:", ""] + [f"   {q}" for q in toctree] + [""]
    pages["index.rst"] = "\n".join(index)
    return pages


def write_api_pages(app: object = None) -> None:
    """Writes the API pages under ``docs/api/``; stale ones are removed, unchanged ones kept."""
    out = DOCS / API_DIR
    out.mkdir(exist_ok=True)
    pages = api_pages()
    for stale in set(p.name for p in out.glob("*.rst")) - set(pages):
        (out / stale).unlink()
    for name, text in pages.items():
        path = out / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def constant_docs(app, what, name, obj, options, lines) -> None:
    """A constant's doc is its ``#:`` comment where it is defined, not its type's docstring."""
    if what != "data" or obj.__doc__ != type(obj).__doc__:
        return
    from sphinx.errors import PycodeError
    from sphinx.pycode import ModuleAnalyzer

    short = name.rpartition(".")[2]
    lines[:] = []
    for module in sorted(m for m in sys.modules if m.split(".")[0] == "clrjax"):
        try:
            docs = ModuleAnalyzer.for_module(module).find_attr_docs()
        except PycodeError:  # a module Sphinx's parser cannot read documents no constant
            continue
        if ("", short) in docs:
            lines[:] = docs["", short]
            return


# A dotted name through a private module (``jax._src.mesh.Mesh``), shown by its last part.
_PRIVATE_PATH = re.compile(r"(?<![\w.~])((?:\w+\.)*_\w+\.(?:\w+\.)*\w+)")


def short_private_types(app, what, name, obj, options, lines) -> None:
    """``:type: jax._src.mesh.Mesh`` (napoleon's attribute types) reads ``Mesh``."""
    for i, line in enumerate(lines):
        if line.lstrip().startswith(":type"):
            lines[i] = _PRIVATE_PATH.sub(r"~\1", line)


def parsable_signature(app, what, name, obj, options, signature, return_annotation):
    """A dataclass field's ``= <factory>`` default reads ``= ...``: Sphinx can parse that."""
    if not signature:
        return None
    return signature.replace("<factory>", "..."), return_annotation


def setup(app):
    app.connect("builder-inited", write_api_pages)
    app.connect("autodoc-process-docstring", constant_docs)
    app.connect("autodoc-process-docstring", short_private_types)
    app.connect("autodoc-process-signature", parsable_signature)
