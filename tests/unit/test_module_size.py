"""Every module of ``worker``, ``schemas`` and ``persistence`` is at most 400 lines long.

The rule has no exceptions: a module that outgrows it is split along its seams.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "schemas", "persistence")
MAX_LINES = 400


def modules(root: Path, packages: Iterable[str]) -> list[Path]:
    return sorted(path for package in packages for path in (root / package).rglob("*.py"))


def oversized(paths: Iterable[Path], limit: int = MAX_LINES) -> dict[str, int]:
    """Each file longer than ``limit`` lines -> its line count."""
    counts = {str(path): len(path.read_text(encoding="utf-8").splitlines()) for path in paths}
    return {path: count for path, count in counts.items() if count > limit}


def test_the_packages_have_modules() -> None:
    found = {path.relative_to(ROOT).as_posix() for path in modules(ROOT, PACKAGES)}
    assert {"worker/cli/main.py", "schemas/__init__.py", "persistence/ports.py"} <= found


def test_no_module_is_longer_than_400_lines() -> None:
    found = {
        Path(path).relative_to(ROOT).as_posix(): count
        for path, count in oversized(modules(ROOT, PACKAGES)).items()
    }
    assert found == {}, f"modules over {MAX_LINES} lines: {found}"


def test_the_check_catches_a_long_module(tmp_path: Path) -> None:
    package = tmp_path / "pkg" / "sub"
    package.mkdir(parents=True)
    (package / "fits.py").write_text("x = 1\n" * MAX_LINES, encoding="utf-8")
    (package / "long.py").write_text("x = 1\n" * (MAX_LINES + 1), encoding="utf-8")
    (tmp_path / "pkg" / "notes.txt").write_text("x\n" * 1000, encoding="utf-8")

    assert oversized(modules(tmp_path, ["pkg"])) == {str(package / "long.py"): MAX_LINES + 1}
