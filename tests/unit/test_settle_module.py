"""Exactly one module settles broker deliveries (acks, nacks, rejects)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SETTLING_CALL = re.compile(r"\.(ack|nack|reject)\(")


def test_only_worker_settle_acks_or_rejects() -> None:
    settlers = sorted(
        str(path.relative_to(ROOT))
        for package in ("worker", "persistence", "schemas")
        for path in (ROOT / package).rglob("*.py")
        if SETTLING_CALL.search(path.read_text(encoding="utf-8"))
    )
    assert settlers == ["worker/pipeline/settle.py"]
