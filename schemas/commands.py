"""The command envelope: lifecycle commands tagged by ``command_type`` (DOMAIN.md §5)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from schemas._base import Frozen, RuntimeId, StrictBool
from schemas.states import SimpleAbandonCode


class _Command(Frozen):
    command_id: UUID
    reason: str | None = Field(default=None, max_length=1024, description="audit note")


class Retire(_Command):
    command_type: Literal["retire"] = "retire"
    abandon_pending: StrictBool = False


class Reset(_Command):
    command_type: Literal["reset"] = "reset"


class Stop(_Command):
    command_type: Literal["stop"] = "stop"


class Resume(_Command):
    command_type: Literal["resume"] = "resume"


class Destroy(_Command):
    command_type: Literal["destroy"] = "destroy"


class Recycle(_Command):
    command_type: Literal["recycle"] = "recycle"


class AbandonPending(_Command):
    command_type: Literal["abandon_pending"] = "abandon_pending"
    abandon_reason: SimpleAbandonCode = "cancelled"


class AbandonInput(_Command):
    command_type: Literal["abandon_input"] = "abandon_input"
    input_id: UUID
    abandon_reason: SimpleAbandonCode = "cancelled"


class CancelRun(_Command):
    command_type: Literal["cancel_run"] = "cancel_run"


AnyCommand = (
    Retire | Reset | Stop | Resume | Destroy | Recycle | AbandonPending | AbandonInput | CancelRun
)
"""Any one command model (the plain union, for ``isinstance`` and type annotations)."""

Command = Annotated[
    Retire | Reset | Stop | Resume | Destroy | Recycle | AbandonPending | AbandonInput | CancelRun,
    Field(discriminator="command_type"),
]

COMMAND_TYPES: tuple[str, ...] = (
    "retire",
    "reset",
    "stop",
    "resume",
    "destroy",
    "recycle",
    "abandon_pending",
    "abandon_input",
    "cancel_run",
)


class CommandEnvelope(Frozen):
    """Body of an AMQP message of type ``meerkat.command.v1``."""

    runtime_id: RuntimeId
    command: Command
