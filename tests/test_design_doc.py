"""docs/design.md, the map of the package, names every module and every public name."""

from __future__ import annotations

import pathlib
import pkgutil
import re

import clrjax
from clrjax import plotting

DESIGN = pathlib.Path(__file__).resolve().parents[1] / "docs" / "design.md"
PACKAGE = pathlib.Path(clrjax.__file__).resolve().parent


def _modules() -> list[str]:
    """Every module file of the package, as a path relative to the repository (``clrjax/x.py``)."""
    found = ["clrjax/__init__.py"]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="clrjax."):
        path = info.name.replace(".", "/")
        found.append(path + ("/__init__.py" if info.ispkg else ".py"))
    return sorted(found)


def _mentioned(path: str, text: str) -> bool:
    """A module is on the map by its path, or a package's ``__init__`` by its folder."""
    if f"`{path}`" in text:
        return True
    folder = path.removesuffix("/__init__.py")
    if path.endswith("__init__.py") and f"`{folder}/`" in text:
        return True
    # A row may list a package's modules together: `clrjax/demo/_comparison/` (`_tasks`, ...).
    parent, _, name = path.rpartition("/")
    return f"`{parent}/`" in text and f"`{name.removesuffix('.py')}`" in text


def test_every_module_is_on_the_map():
    text = DESIGN.read_text()
    missing = [m for m in _modules() if not _mentioned(m, text)]
    assert not missing, f"docs/design.md does not name these modules: {missing}"


def test_every_public_name_is_on_the_map():
    text = DESIGN.read_text()
    names = [n for n in clrjax.__all__ if n != "__version__"] + list(plotting.__all__)
    missing = [n for n in names if f"`{n}`" not in text and f"`clrjax.plotting.{n}`" not in text]
    assert not missing, f"docs/design.md does not name these public names: {missing}"


def test_the_map_names_no_module_that_is_gone():
    text = DESIGN.read_text()
    modules = set(_modules())
    named = set(re.findall(r"`(clrjax/[\w/]+\.py)`", text))
    gone = sorted(named - modules)
    assert not gone, f"docs/design.md names modules that do not exist: {gone}"
