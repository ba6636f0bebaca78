"""requirements.lock pins every runtime dependency of pyproject.toml, each with hashes.

The lock is what docker/Dockerfile installs (``pip install --require-hashes``); ``ops/lock.sh``
regenerates it. Checked offline: each ``[project].dependencies`` entry appears as
``name==version``, every pin carries hashes, and no dev tool leaks into the lock.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\;]+)")
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps: list[str] = project["dependencies"]
    names = []
    for spec in deps:
        match = NAME.match(spec)
        assert match, spec
        names.append(normalise(match.group(1)))
    return names


def locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes)."""
    pins: dict[str, tuple[str, int]] = {}
    current: str | None = None
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = normalise(match.group(1))
            pins[current] = (match.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
        elif line and not line.startswith(" "):
            current = None
    return pins


def test_every_runtime_dependency_is_pinned() -> None:
    pins = locked()
    missing = [name for name in runtime_dependencies() if name not in pins]
    assert not missing, f"not in requirements.lock (run bash ops/lock.sh): {missing}"


def test_every_pin_has_hashes() -> None:
    pins = locked()
    assert pins
    unhashed = [name for name, (_, hashes) in pins.items() if hashes == 0]
    assert not unhashed, f"pins without --hash: {unhashed}"


def test_lock_has_no_dev_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev_only = {normalise(m.group(1)) for s in project["optional-dependencies"]["dev"]
                if (m := NAME.match(s))}
    runtime = set(runtime_dependencies())
    leaked = sorted((dev_only - runtime) & set(locked()) & {"pytest", "mypy", "ruff", "hypothesis"})
    assert not leaked, f"dev tools in the runtime lock: {leaked}"
