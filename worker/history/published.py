"""What a producer published, and what the events exchange carried: the two logs ``verify`` reads.

The history checker compares the store against a record kept by the *producer*, not by the
worker: a worker that loses a message cannot be trusted to remember that it saw it. A producer
(the fault suite, or a user's own test) writes one JSON object per line, in publish order, with
:class:`PublishedLog`; ``seq`` is assigned by the log so publish order survives any reordering
the broker or the worker might do. Record a message after its publish is confirmed: a record of a
message the broker never took is reported as lost, which is the point of the log.

JSON lines because they are appended one at a time with a flush each, so a producer killed
mid-run leaves a log that is valid up to its last complete line, and because they diff and grep
well. Appends take a lock: a producer may publish from several threads.

Each record carries the content addresses of its inline images (``image_blob_ids``), computed
with the same function admission uses (:func:`schemas.validation.blob_id_for`), so the checker
can verify the blob store holds every image of every accepted input without re-reading bodies.

:class:`EventCapture` is the same idea for the events exchange: one event envelope body per
line, as the broker delivered it; :func:`read_events` parses them back. Bind the capture's
queue (routing key ``#``) before the first publish: an event relayed before it was bound is
missing from the capture and reported as unpublished. Duplicates are fine (the relay is
at-least-once).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import CommandEnvelope, EventEnvelope, InlineImageBlock, InputEnvelope
from schemas.validation import blob_id_for, content_blocks

M = TypeVar("M", bound=BaseModel)

PublishedKind = Literal["input", "command", "hostile"]
Expectation = Literal["accepted", "dead_letter"]


class PublishedRecord(BaseModel):
    """One published message, as the producer saw it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(ge=0, description="publish order, from 0, assigned by the log")
    runtime_id: str
    kind: PublishedKind
    message_id: str | None = None
    input_id: UUID | None = None
    command_id: UUID | None = None
    input_type: str | None = None
    command_type: str | None = None
    idempotency_key: str | None = None
    image_blob_ids: tuple[str, ...] = ()
    expect: Expectation = "accepted"


class PublishedLogError(ValueError):
    """A published log or an event capture has a line that does not parse."""


def input_image_blob_ids(envelope: InputEnvelope) -> tuple[str, ...]:
    """Content addresses of the inline images of an input, in content order."""
    return tuple(
        blob_id_for(block.media_type.value, block.data)
        for block in content_blocks(envelope.input)
        if isinstance(block, InlineImageBlock)
    )


class _JsonLines:
    """An append-only JSON-lines file: one lock, one flush per line."""

    def __init__(self, path: str | Path, *, append: bool) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: IO[str] | None = self.path.open("a" if append else "w", encoding="utf-8")

    def _write(self, line: str) -> None:
        # Callers hold ``self._lock``: the line and whatever was numbered with it stay together.
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PublishedLog(_JsonLines):
    """The producer's record of what it published, one :class:`PublishedRecord` per line.

    ``append=True`` continues an existing log (``seq`` goes on from its last line); the default
    starts a new one.
    """

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        next_seq = 0
        if append and Path(path).exists():
            existing = read_published(path)
            next_seq = existing[-1].seq + 1 if existing else 0
        super().__init__(path, append=append)
        self._next_seq = next_seq

    def record_input(
        self,
        envelope: InputEnvelope,
        *,
        message_id: str | None = None,
        expect: Expectation = "accepted",
    ) -> PublishedRecord:
        """Record a published input; ``message_id`` defaults to the input id, as the CLI sends."""
        header = envelope.input.header
        return self._append(
            runtime_id=envelope.runtime_id,
            kind="input",
            message_id=message_id if message_id is not None else str(header.id),
            input_id=header.id,
            input_type=envelope.input.input_type,
            idempotency_key=header.idempotency_key,
            image_blob_ids=input_image_blob_ids(envelope),
            expect=expect,
        )

    def record_command(
        self,
        envelope: CommandEnvelope,
        *,
        message_id: str | None = None,
        expect: Expectation = "accepted",
    ) -> PublishedRecord:
        """Record a published command; ``message_id`` defaults to the command id."""
        command = envelope.command
        return self._append(
            runtime_id=envelope.runtime_id,
            kind="command",
            message_id=message_id if message_id is not None else str(command.command_id),
            command_id=command.command_id,
            command_type=command.command_type,
            expect=expect,
        )

    def record_hostile(self, runtime_id: str, message_id: str | None) -> PublishedRecord:
        """Record a message built to be refused: it must end in the dead-letter queue."""
        return self._append(
            runtime_id=runtime_id, kind="hostile", message_id=message_id, expect="dead_letter"
        )

    def _append(self, **fields: object) -> PublishedRecord:
        with self._lock:
            record = PublishedRecord.model_validate({"seq": self._next_seq, **fields})
            self._write(record.model_dump_json())
            self._next_seq += 1
        return record

class EventCapture(_JsonLines):
    """Bodies of messages taken from the events exchange, one compact JSON object per line."""

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        super().__init__(path, append=append)

    def append(self, body: bytes | str) -> None:
        """Append one event body. Re-serialised compactly: a body with newlines stays one line.

        Raises ``ValueError`` for a body that is not JSON.
        """
        line = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            self._write(line)

def read_published(path: str | Path) -> list[PublishedRecord]:
    """Every record of a published log, in file order.

    Raises :class:`PublishedLogError` naming the file and line of the first bad line, and
    ``OSError`` when the file cannot be read. Blank lines are skipped.
    """
    return [_parse_line(path, number, line, PublishedRecord) for number, line in _lines(path)]


def read_events(path: str | Path) -> list[EventEnvelope]:
    """Every event envelope of a capture, in file order; errors as :func:`read_published`."""
    return [_parse_line(path, number, line, EventEnvelope) for number, line in _lines(path)]


def _lines(path: str | Path) -> list[tuple[int, str]]:
    with Path(path).open(encoding="utf-8") as handle:
        return [(n, line) for n, line in enumerate(handle, start=1) if line.strip()]


def _parse_line(path: str | Path, number: int, line: str, model: type[M]) -> M:
    try:
        return model.model_validate_json(line)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(line)"
        raise PublishedLogError(f"{path}:{number}: {where}: {first['msg']}") from exc
