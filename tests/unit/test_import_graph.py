"""No import cycle among the project's modules.

The graph is read from the source (``ast``), not from ``sys.modules``, so that an import Python
never ran in this process counts too. A node is a module named by its path (``a/b/__init__.py``
is ``a.b``, ``a/b/c.py`` is ``a.b.c``); an edge goes from a module to each project module it
names, wherever the naming is:

- ``import a.b`` and ``from a.b import x``, at the top of the module, inside a function (a lazy
  import) or under ``if TYPE_CHECKING:``. Type-checking imports count: a cycle that only the type
  checker sees still ties the two modules together, and turning such an import into a real one
  (a common change) must not be the moment the cycle appears.
- ``from a import b`` where ``a.b`` is a module is an edge to ``a.b``; where ``b`` is a name
  defined in ``a/__init__.py`` it is an edge to ``a`` (that ``__init__``). Relative imports are
  resolved against the importing module's package.
- A string given to ``importlib.import_module(...)`` or ``__import__(...)``; in a module that
  also calls one of them with a computed name, every string literal that is exactly a project
  module's name (a table of names to import); and any ``"module:callable"`` string literal
  naming a project module (the form the executor loader hands to importlib).

Importing ``a.b`` runs ``a/__init__.py`` first; that implicit step is not an edge. Counting it
would make every package whose ``__init__`` re-exports its submodules a cycle with each of them,
while the order Python runs them in is well defined.

The packages are ``worker``, ``schemas`` and ``persistence``, and ``bench`` when it is a package
(a folder with ``__init__.py``; today it holds scripts that nothing imports).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.unit.import_graph import describe, find_cycles, import_graph

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "schemas", "persistence", "bench")


# --- the project ------------------------------------------------------------------------------


def test_the_graph_covers_the_packages() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert {"worker", "schemas", "persistence"} <= graph.keys()
    assert "worker.core.admission" in graph
    assert "worker.config" in graph["worker.cli.main"]


def test_no_import_cycle() -> None:
    cycles = find_cycles(import_graph(ROOT, PACKAGES))
    assert not cycles, "import cycles:\n" + describe(cycles)


# --- the checker on known cases ---------------------------------------------------------------


def _package(root: Path, files: Mapping[str, str]) -> None:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")


def test_finds_a_cycle_of_top_level_imports(tmp_path: Path) -> None:
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import B\nA = 1\n",
        "pkg/b.py": "import pkg.c\nB = 2\n",
        "pkg/c.py": "from pkg import a\n",
    })
    cycles = find_cycles(import_graph(tmp_path, ["pkg"]))
    assert cycles == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert describe(cycles) == "pkg.a → pkg.b → pkg.c → pkg.a"


def test_finds_a_cycle_closed_by_a_lazy_import(tmp_path: Path) -> None:
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/main.py": "def run() -> None:\n    from pkg.commands import go\n    go()\n",
        "pkg/commands.py": "from pkg.main import run\n\ndef go() -> None: ...\n",
    })
    assert find_cycles(import_graph(tmp_path, ["pkg"])) == [
        ["pkg.commands", "pkg.main", "pkg.commands"]
    ]


def test_finds_a_cycle_closed_by_an_importlib_string(tmp_path: Path) -> None:
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/main.py": (
            "import importlib\n\n"
            "def handler() -> object:\n"
            "    return importlib.import_module('pkg.commands').go\n"
        ),
        "pkg/commands.py": "from pkg.main import handler\n",
        "pkg/relative.py": (
            "from importlib import import_module\n"
            "mod = import_module('.plugin', package=__package__)\n"
        ),
        "pkg/plugin.py": "import pkg.relative\n",
    })
    assert find_cycles(import_graph(tmp_path, ["pkg"])) == [
        ["pkg.commands", "pkg.main", "pkg.commands"],
        ["pkg.plugin", "pkg.relative", "pkg.plugin"],
    ]


def test_finds_a_cycle_closed_by_a_table_of_module_names(tmp_path: Path) -> None:
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/main.py": (
            "import importlib\n\n"
            "TABLE = {'go': ('pkg.commands', 'go'), 'log': ('logging', 'x')}\n\n"
            "def handler(name: str) -> object:\n"
            "    module, attribute = TABLE[name]\n"
            "    return getattr(importlib.import_module(module), attribute)\n"
        ),
        "pkg/commands.py": "from pkg.main import handler\n",
        # The same string without a computed import names nothing.
        "pkg/names.py": "import pkg.other\nNAME = 'pkg.commands'\n",
        "pkg/other.py": "import pkg.names\n",
    })
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.names"] == {"pkg.other"}
    assert find_cycles(graph) == [
        ["pkg.commands", "pkg.main", "pkg.commands"],
        ["pkg.names", "pkg.other", "pkg.names"],
    ]


def test_finds_a_cycle_closed_by_a_module_callable_string(tmp_path: Path) -> None:
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/config.py": "DEFAULT_EXECUTOR = 'pkg.executors.echo:execute'\n",
        "pkg/executors/__init__.py": "",
        "pkg/executors/echo.py": "from pkg.config import DEFAULT_EXECUTOR\n",
    })
    assert find_cycles(import_graph(tmp_path, ["pkg"])) == [
        ["pkg.config", "pkg.executors.echo", "pkg.config"]
    ]


def test_finds_a_cycle_closed_under_type_checking(tmp_path: Path) -> None:
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": (
            "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg.b import B\n"
        ),
        "pkg/b.py": "from pkg.a import *\n",
    })
    assert find_cycles(import_graph(tmp_path, ["pkg"])) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_resolves_relative_imports_and_package_inits(tmp_path: Path) -> None:
    _package(tmp_path, {
        "pkg/__init__.py": "from .sub.x import X\nVERSION = 1\n",
        "pkg/sub/__init__.py": "from . import x\n",
        "pkg/sub/x.py": "from .. import VERSION\nfrom ..sub import y\nX = VERSION\n",
        "pkg/sub/y.py": "from ...outside import nothing\nimport json\n",
    })
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {
        "pkg": {"pkg.sub.x"},
        "pkg.sub": {"pkg.sub.x"},
        "pkg.sub.x": {"pkg", "pkg.sub.y"},
        "pkg.sub.y": set(),
    }
    # ``pkg/__init__`` imports x, and x imports a name defined in ``pkg/__init__``.
    assert find_cycles(graph) == [["pkg", "pkg.sub.x", "pkg"]]


def test_a_package_init_re_exporting_its_modules_is_no_cycle(tmp_path: Path) -> None:
    _package(tmp_path, {
        "pkg/__init__.py": "from pkg.a import A\nfrom pkg.b import B\n",
        "pkg/a.py": "from pkg.b import B\nA = B\n",
        "pkg/b.py": "B = 1\n",
        "other/__init__.py": "",
        "other/user.py": "import pkg.a\nfrom pkg import b\nfrom pkg import A\n",
    })
    graph = import_graph(tmp_path, ["pkg", "other", "missing"])
    assert graph["other.user"] == {"pkg", "pkg.a", "pkg.b"}
    assert find_cycles(graph) == []


def test_lists_each_cycle_of_a_tangle(tmp_path: Path) -> None:
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\nimport pkg.c\n",
        "pkg/b.py": "import pkg.a\n",
        "pkg/c.py": "import pkg.a\n",
    })
    assert find_cycles(import_graph(tmp_path, ["pkg"])) == [
        ["pkg.a", "pkg.b", "pkg.a"],
        ["pkg.a", "pkg.c", "pkg.a"],
    ]
