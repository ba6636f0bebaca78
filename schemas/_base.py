"""Shared base model and primitive types of the wire contract.

Producers' bugs should fail loudly at the door rather than be repaired silently: the primitive
types here are strict where pydantic's lax mode would coerce a wrong JSON type into a right
one (a number into a timestamp, ``"1"`` into an int, ``1`` into a bool). JSON strings for UUIDs,
timestamps and enums are still accepted, because JSON has no other way to carry them; and the
same types validate Python values built in code (a ``datetime``, a ``UUID``) unchanged.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Strict,
    StringConstraints,
)

RUNTIME_ID_PATTERN = r"^[A-Za-z0-9:._-]{1,200}$"

RuntimeId = Annotated[str, StringConstraints(pattern=RUNTIME_ID_PATTERN)]
"""One logical agent runtime, e.g. ``rt:session:<uuid>``."""

Key = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00]*$")]
"""Idempotency, supersession and correlation keys. No NUL character: keys are stored in text
columns, and PostgreSQL refuses NUL in text, which would fail the commit on every delivery."""

StrictInt = Annotated[int, Strict()]
"""An integer that must arrive as a JSON integer (not ``"1"``, ``1.0`` or ``true``)."""

StrictBool = Annotated[bool, Strict()]
"""A boolean that must arrive as ``true``/``false`` (not ``1``, ``"yes"`` or ``"false"``)."""

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})"
)


def _rfc3339_text(value: object) -> object:
    """Let through a ``datetime`` built in code, or an RFC 3339 string with a time zone.

    Lax pydantic would read ``1700000000`` (or ``"1700000000"``) as seconds since the epoch:
    a producer that serialised the wrong field would have its input stored under a made-up time.
    """
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise ValueError(
        "must be an RFC 3339 date-time string with a timezone, e.g. 2026-11-26T12:00:00Z"
    )


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
"""A point in time as RFC 3339 text with a time zone (``Z`` or ``±hh:mm``)."""


class Frozen(BaseModel):
    """Every wire model is immutable and refuses unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
