"""``worker/core`` stays pure (STYLE.md habit 1): the standard library, ``schemas`` and pure
data-structure libraries only, and nothing that reads a clock, draws randomness, does I/O or
mints ids by itself."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import worker.core

pytestmark = pytest.mark.unit

CORE = Path(worker.core.__file__).parent
MODULES = sorted(CORE.rglob("*.py"))

FORBIDDEN_MODULES = {
    "asyncio",
    "time",
    "random",
    "os",
    "socket",
    "logging",
    "threading",
    "subprocess",
    "secrets",
    "multiprocessing",
    "concurrent",
    "selectors",
    "shutil",
    "tempfile",
    "io",
    "sqlite3",
    "urllib",
    "http",
}
"""Standard-library modules that bring a clock, randomness, concurrency or I/O."""

FORBIDDEN_CALLS = {"now", "utcnow", "today", "uuid1", "uuid3", "uuid4", "uuid5", "uuid6", "uuid7"}
"""Calls that read the clock or mint an id; the core is handed both through its Context."""

FORBIDDEN_TEXT = re.compile(r"\.now\(|\.utcnow\(|\.today\(|\buuid[1-7]\(")


def imported_modules(source: str) -> set[str]:
    """Every absolute module an ``import`` or ``from ... import`` names (relative ones are the
    package's own)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def forbidden_calls(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in FORBIDDEN_CALLS:
                found.add(name)
    return found


PURE_LIBRARIES = {"immutables"}
"""Libraries outside the standard library the core may use: pure data structures (the
persistent map of :mod:`worker.core.inputs`), no clock, no I/O."""


def allowed(module: str) -> bool:
    top = module.split(".", 1)[0]
    if top in FORBIDDEN_MODULES:
        return False
    if top == "schemas" or module == "worker.core" or module.startswith("worker.core."):
        return True
    return top in sys.stdlib_module_names or top in PURE_LIBRARIES


def test_the_core_has_modules() -> None:
    names = {path.name for path in MODULES}
    assert {"lifecycle.py", "admission.py", "commands.py", "runs.py", "recovery.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_only_the_standard_library_and_schemas(path: Path) -> None:
    imports = imported_modules(path.read_text())
    assert [m for m in sorted(imports) if not allowed(m)] == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_clock_no_random_ids(path: Path) -> None:
    source = path.read_text()
    assert forbidden_calls(source) == set()
    assert FORBIDDEN_TEXT.findall(source) == []


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("import asyncio", {"asyncio"}),
        ("import os.path", {"os.path"}),
        ("from time import monotonic", {"time"}),
        ("import random as r", {"random"}),
        ("from logging import getLogger", {"logging"}),
        ("import pydantic", {"pydantic"}),
        ("from worker.driver import Driver", {"worker.driver"}),
        ("from persistence import ports", {"persistence"}),
        ("from . import model\nfrom schemas import Lane\nimport hashlib", set()),
        ("from worker.core.model import Runtime\nimport dataclasses", set()),
    ],
)
def test_the_import_check_catches_what_it_must(source: str, bad: set[str]) -> None:
    assert {m for m in imported_modules(source) if not allowed(m)} == bad


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("datetime.now(UTC)", {"now"}),
        ("datetime.datetime.utcnow()", {"utcnow"}),
        ("uuid.uuid4()", {"uuid4"}),
        ("uuid7()", {"uuid7"}),
        ("ctx.now\nctx.new_id()", set()),
    ],
)
def test_the_call_check_catches_what_it_must(source: str, bad: set[str]) -> None:
    assert forbidden_calls(source) == bad
    assert bool(FORBIDDEN_TEXT.findall(source)) is bool(bad)
