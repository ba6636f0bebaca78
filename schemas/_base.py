"""Shared base model and primitive types of the wire contract."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

RUNTIME_ID_PATTERN = r"^[A-Za-z0-9:._-]{1,200}$"

RuntimeId = Annotated[str, StringConstraints(pattern=RUNTIME_ID_PATTERN)]
"""One logical agent runtime, e.g. ``rt:session:<uuid>``."""

Key = Annotated[str, StringConstraints(min_length=1, max_length=256)]
"""Idempotency, supersession and correlation keys."""


class Frozen(BaseModel):
    """Every wire model is immutable and refuses unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
