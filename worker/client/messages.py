"""Building the messages a producer publishes: one function per input kind and per command.

The builders do no I/O (an image given as a path is read, nothing else). Each returns the
envelope exactly as it goes on the wire: an :class:`~schemas.InputEnvelope` or a
:class:`~schemas.CommandEnvelope`, with a fresh UUIDv7 id (ids of one producer sort in the order
they were made) and, for inputs, a header stamped now in UTC. A header of one's own
(:func:`new_header` with other options, or any :class:`~schemas.InputHeader`) replaces the
default one; the default source of each kind is the one the domain expects of it (operator for a
prompt, the peer for a peer input, the flow for a flow step, ...), durability ``durable``.

Fields that do not fit the models raise ``ValueError`` naming the field, before anything is
published; what only the worker can judge (a runtime's state, the size limits of the
deployment) comes back as a ``rejected`` outcome instead.

``meerkat-worker send`` builds its messages here too, so the command line and every producer in
Python send the same bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from schemas import (
    AnyInput,
    Command,
    CommandEnvelope,
    ContentBlock,
    ContinuationInput,
    Durability,
    ExternalEventInput,
    ExternalSource,
    FlowSource,
    FlowStepInput,
    HandlingMode,
    ImageMediaType,
    InlineImageBlock,
    InputEnvelope,
    InputHeader,
    OperationInput,
    OperatorSource,
    PeerInput,
    PeerMessage,
    PeerRequest,
    PeerResponseProgress,
    PeerResponseTerminal,
    PeerSource,
    PromptInput,
    SystemSource,
    TextBlock,
    TurnMetadata,
    Visibility,
)
from worker.ids import utcnow, uuid7

Image = bytes | Path
"""An image: its bytes (PNG, JPEG, GIF or WebP, told by the magic number) or a file of them."""

_T = TypeVar("_T")

Source = OperatorSource | PeerSource | FlowSource | SystemSource | ExternalSource
PeerConvention = PeerMessage | PeerRequest | PeerResponseProgress | PeerResponseTerminal


# --- parts ------------------------------------------------------------------------------------


def new_header(
    *,
    source: Source | None = None,
    durability: Durability = Durability.DURABLE,
    idempotency_key: str | None = None,
    supersession_key: str | None = None,
    correlation_id: str | None = None,
    visibility: Visibility | None = None,
    input_id: UUID | None = None,
) -> InputHeader:
    """An input header with a fresh id (or ``input_id``), stamped now; operator source by
    default."""
    return _valid(lambda: InputHeader(
        id=input_id or uuid7(),
        timestamp=utcnow(),
        source=source or OperatorSource(),
        durability=durability,
        visibility=visibility or Visibility(),
        idempotency_key=idempotency_key,
        supersession_key=supersession_key,
        correlation_id=correlation_id,
    ))


def image_media_type(raw: bytes, path: Path | str = "image") -> ImageMediaType:
    """The media type told by the image's magic number; ``ValueError`` for anything else."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageMediaType.PNG
    if raw.startswith(b"\xff\xd8\xff"):
        return ImageMediaType.JPEG
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return ImageMediaType.GIF
    if len(raw) >= 12 and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return ImageMediaType.WEBP
    raise ValueError(f"{path}: not a PNG, JPEG, GIF or WebP image")


def image_block(image: Image) -> InlineImageBlock:
    """An inline image block; ``OSError`` when a file cannot be read."""
    raw = image.read_bytes() if isinstance(image, Path) else image
    name = image if isinstance(image, Path) else "image"
    return InlineImageBlock(media_type=image_media_type(raw, name),
                            data=base64.b64encode(raw).decode("ascii"))


def content(text: str | None, images: Iterable[Image] = ()) -> list[ContentBlock]:
    """The text (when given), then each image inline."""
    blocks: list[ContentBlock] = [TextBlock(text=text)] if text is not None else []
    blocks.extend(image_block(image) for image in images)
    return blocks


# --- inputs -----------------------------------------------------------------------------------


def prompt(
    runtime_id: str,
    text: str,
    *,
    images: Iterable[Image] = (),
    idempotency_key: str | None = None,
    handling_mode: HandlingMode | None = None,
    labels: Mapping[str, str] | None = None,
    header: InputHeader | None = None,
) -> InputEnvelope:
    """A prompt: the text, then each image inline. It always runs alone in its turn."""
    metadata = (TurnMetadata(handling_mode=handling_mode, labels=dict(labels or {}))
                if handling_mode is not None or labels else None)
    return _input(runtime_id, lambda: PromptInput(
        header=header or new_header(idempotency_key=idempotency_key),
        content=content(text, images), turn_metadata=metadata))


def peer(
    runtime_id: str,
    text: str,
    *,
    peer_id: str,
    convention: PeerConvention | None = None,
    images: Iterable[Image] = (),
    payload: Any = None,
    handling_mode: HandlingMode | None = None,
    idempotency_key: str | None = None,
    header: InputHeader | None = None,
) -> InputEnvelope:
    """A message from another agent (``peer_id``): a plain message by default, or a request,
    a progress report or the final response of a request (``convention``)."""
    return _input(runtime_id, lambda: PeerInput(
        header=header or new_header(source=PeerSource(peer_id=peer_id),
                                    idempotency_key=idempotency_key),
        convention=convention or PeerMessage(), content=content(text, images),
        payload=payload, handling_mode=handling_mode))


def flow_step(
    runtime_id: str,
    text: str,
    *,
    flow_id: str,
    step_index: int,
    step_id: str,
    images: Iterable[Image] = (),
    idempotency_key: str | None = None,
    header: InputHeader | None = None,
) -> InputEnvelope:
    """Step ``step_id`` (number ``step_index``) of flow ``flow_id``."""
    return _input(runtime_id, lambda: FlowStepInput(
        header=header or new_header(source=FlowSource(flow_id=flow_id, step_index=step_index),
                                    idempotency_key=idempotency_key),
        step_id=step_id, content=content(text, images)))


def external_event(
    runtime_id: str,
    event_type: str,
    payload: Any,
    *,
    source_name: str,
    text: str | None = None,
    images: Iterable[Image] = (),
    handling_mode: HandlingMode = HandlingMode.QUEUE,
    supersession_key: str | None = None,
    idempotency_key: str | None = None,
    header: InputHeader | None = None,
) -> InputEnvelope:
    """An event from outside (``source_name``): a JSON ``payload``, optionally with content
    blocks. A queued event is superseded by a newer one with the same ``supersession_key``."""
    images = list(images)
    blocks = content(text, images) if text is not None or images else None
    return _input(runtime_id, lambda: ExternalEventInput(
        header=header or new_header(source=ExternalSource(source_name=source_name),
                                    supersession_key=supersession_key,
                                    idempotency_key=idempotency_key),
        event_type=event_type, payload=payload, blocks=blocks, handling_mode=handling_mode))


def continuation(
    runtime_id: str,
    reason: str,
    *,
    handling_mode: HandlingMode = HandlingMode.QUEUE,
    request_id: str | None = None,
    idempotency_key: str | None = None,
    header: InputHeader | None = None,
) -> InputEnvelope:
    """Resumes pending work (system source); it adds nothing to the transcript."""
    return _input(runtime_id, lambda: ContinuationInput(
        header=header or new_header(source=SystemSource(), idempotency_key=idempotency_key),
        reason=reason, handling_mode=handling_mode, request_id=request_id))


def operation(
    runtime_id: str,
    operation_id: str,
    event: Any,
    *,
    idempotency_key: str | None = None,
    header: InputHeader | None = None,
) -> InputEnvelope:
    """An event of a long-running operation: recorded (consumed on accept), never run."""
    return _input(runtime_id, lambda: OperationInput(
        header=header or new_header(source=SystemSource(), idempotency_key=idempotency_key),
        operation_id=operation_id, event=event))


# --- commands ---------------------------------------------------------------------------------

_COMMAND = TypeAdapter[Command](Command)


def command(runtime_id: str, command_type: str, *, reason: str | None = None,
            command_id: UUID | None = None, **fields: Any) -> CommandEnvelope:
    """Any lifecycle command by name (``retire``, ``reset``, ...; ``schemas.COMMAND_TYPES``)
    with its own fields (``input_id=`` for ``abandon_input``, ``abandon_reason=``, ...);
    ``reason`` is free audit text."""
    values = {"command_type": command_type, "command_id": command_id or uuid7(),
              "reason": reason, **{k: v for k, v in fields.items() if v is not None}}
    try:
        body = _COMMAND.validate_python(values)
    except ValidationError as exc:
        raise ValueError(f"not a valid {command_type} command: {describe(exc)}") from None
    return CommandEnvelope(runtime_id=runtime_id, command=body)


def retire(runtime_id: str, *, abandon_pending: bool = False,
           reason: str | None = None) -> CommandEnvelope:
    """Take no new input; queued inputs drain first unless ``abandon_pending``."""
    return command(runtime_id, "retire", reason=reason, abandon_pending=abandon_pending)


def reset(runtime_id: str, *, reason: str | None = None) -> CommandEnvelope:
    """Abandon pending inputs and return to idle."""
    return command(runtime_id, "reset", reason=reason)


def stop(runtime_id: str, *, reason: str | None = None) -> CommandEnvelope:
    """Stop the runtime (``resume`` brings it back)."""
    return command(runtime_id, "stop", reason=reason)


def resume(runtime_id: str, *, reason: str | None = None) -> CommandEnvelope:
    """Bring a stopped runtime back to idle."""
    return command(runtime_id, "resume", reason=reason)


def destroy(runtime_id: str, *, reason: str | None = None) -> CommandEnvelope:
    """Destroy the runtime for good."""
    return command(runtime_id, "destroy", reason=reason)


def recycle(runtime_id: str, *, reason: str | None = None) -> CommandEnvelope:
    """Start afresh, keeping the queued inputs."""
    return command(runtime_id, "recycle", reason=reason)


def abandon_pending(runtime_id: str, *, abandon_reason: str = "cancelled",
                    reason: str | None = None) -> CommandEnvelope:
    """Abandon every queued input with ``abandon_reason``."""
    return command(runtime_id, "abandon_pending", reason=reason, abandon_reason=abandon_reason)


def abandon_input(runtime_id: str, input_id: UUID, *, abandon_reason: str = "cancelled",
                  reason: str | None = None) -> CommandEnvelope:
    """Abandon one queued input."""
    return command(runtime_id, "abandon_input", reason=reason, input_id=input_id,
                   abandon_reason=abandon_reason)


def cancel_run(runtime_id: str, *, reason: str | None = None) -> CommandEnvelope:
    """Cancel the run under way."""
    return command(runtime_id, "cancel_run", reason=reason)


# --- helpers ----------------------------------------------------------------------------------


def message_id_of(envelope: InputEnvelope | CommandEnvelope) -> str:
    """The AMQP ``message_id``: the input id or the command id."""
    if isinstance(envelope, InputEnvelope):
        return str(envelope.input.header.id)
    return str(envelope.command.command_id)


def describe(exc: ValidationError) -> str:
    """A validation error on one line: ``field.path: message; ...``."""
    return "; ".join(
        ".".join(str(part) for part in error["loc"]) + ": " + error["msg"]
        if error["loc"]
        else error["msg"]
        for error in exc.errors()
    )


def _valid(build: Callable[[], _T]) -> _T:
    """``build()``, with a model's ``ValidationError`` turned into ``ValueError``."""
    try:
        return build()
    except ValidationError as exc:
        raise ValueError(describe(exc)) from None


def _input(runtime_id: str, build: Callable[[], AnyInput]) -> InputEnvelope:
    return _valid(lambda: InputEnvelope(runtime_id=runtime_id, input=build()))
