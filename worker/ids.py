"""Clock and id sources of the shell (the core gets them passed in)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime

from worker.core import Context


def uuid7() -> uuid.UUID:
    """A time-ordered UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then random."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & (2**48 - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & (2**62 - 1)
    return uuid.UUID(int=value)


def utcnow() -> datetime:
    return datetime.now(UTC)


def live_context() -> Context:
    """The context for one decision: the current time and fresh UUIDv7s."""
    return Context(now=utcnow(), new_id=uuid7)
