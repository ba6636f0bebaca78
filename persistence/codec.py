"""Exact JSON round-trip of the stored values that are kept as JSON: an input (with its
history), a command outcome, an event.

Every store keeps the same JSON shapes, so a value written by one store reads back equal from
any other; the SQL stores keep them in JSON columns (:mod:`persistence.sql.rows` maps the rest
of each row). Datetimes are written as ISO 8601 in UTC and must be timezone-aware: a naive time
has no single meaning once it is stored, so it is refused rather than guessed.

An input and an event are written far more often than they are read (an input whole at every
change of phase), so each also has an encoder straight to JSON text (:func:`encode_input_text`,
:func:`encode_event_text`): the same text that :func:`dumps` makes of its dictionary, for less.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from pydantic import TypeAdapter

from persistence.identity_cache import IdentityCache
from schemas import (
    AbandonReason,
    AnyInput,
    BlobImageBlock,
    CommandCompleted,
    Durability,
    EventEnvelope,
    Input,
    InputKind,
    InputPhase,
    Lane,
)
from schemas.validation import content_blocks
from worker.core.floats import holds_float, read_as_wide_int
from worker.core.model import HistoryEntry, InputRecord

Json = dict[str, Any]

_INPUT = TypeAdapter[AnyInput](Input)
_ABANDON_REASON = TypeAdapter[AbandonReason](AbandonReason)

_PAYLOADS_KEPT = 20_000
_payloads: IdentityCache[Json] = IdentityCache(_PAYLOADS_KEPT)
"""Encoded payloads by the identity of the payload object. An input's payload
never changes after admission and every later image of the record (staged, consumed, ...)
carries the very same object, so each payload is encoded once, not at every update. What a
record's writes keep here is dropped by :func:`release` once it is written terminal (its last
write), so the caches hold the live inputs' encodings, not the last thousands consumed."""


def encode_payload(payload: AnyInput) -> Json:
    """(The encoding is shared: callers serialise it, never change it.)"""
    kept = _payloads.get(payload)
    if kept is not None:
        return kept
    return _payloads.put(payload, _INPUT.dump_python(payload, mode="json"))


def decode_payload(data: Json) -> AnyInput:
    payload = _INPUT.validate_python(data)
    _payloads.put(payload, data)
    return payload


def encode_time(value: datetime) -> str:
    return to_utc(value).isoformat()


def decode_time(text: str) -> datetime:
    return to_utc(datetime.fromisoformat(text))


def to_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime cannot be stored: {value!r}")
    return value.astimezone(UTC)


def _opt_uuid(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _decode_opt_uuid(value: str | None) -> UUID | None:
    return None if value is None else UUID(value)


def encode_input(record: InputRecord) -> Json:
    return {
        "input_id": str(record.input_id),
        "kind": record.kind.value,
        "phase": record.phase.value,
        "lane": record.lane.value,
        "admission_seq": record.admission_seq,
        "durability": record.durability.value,
        "payload": encode_payload(record.payload),
        "created_at": encode_time(record.created_at),
        "updated_at": encode_time(record.updated_at),
        "attempt_count": record.attempt_count,
        "idempotency_key": record.idempotency_key,
        "supersession_key": record.supersession_key,
        "correlation_id": record.correlation_id,
        "last_run_id": _opt_uuid(record.last_run_id),
        "boundary_sequence": record.boundary_sequence,
        "superseded_by": _opt_uuid(record.superseded_by),
        "aggregate_id": _opt_uuid(record.aggregate_id),
        "abandon_reason": (
            None
            if record.abandon_reason is None
            else _ABANDON_REASON.dump_python(record.abandon_reason, mode="json")
        ),
        "recovery_count": record.recovery_count,
        "history": [_encode_history(entry) for entry in record.history],
    }


_KINDS = {member.value: member for member in InputKind}
_PHASES = {member.value: member for member in InputPhase}
_LANES = {member.value: member for member in Lane}
_DURABILITIES = {member.value: member for member in Durability}


def encode_input_text(record: InputRecord) -> str:
    """:func:`encode_input` as JSON text, the same text that :func:`dumps` makes of it, for less:
    orjson writes the UUIDs, UTC times and enums itself (as :func:`encode_input` spells them)
    instead of each being turned into a string first."""
    reason = record.abandon_reason
    fields = {
        "input_id": record.input_id,
        "kind": record.kind,
        "phase": record.phase,
        "lane": record.lane,
        "admission_seq": record.admission_seq,
        "durability": record.durability,
        "payload": encode_payload(record.payload),
        "created_at": to_utc(record.created_at),
        "updated_at": to_utc(record.updated_at),
        "attempt_count": record.attempt_count,
        "idempotency_key": record.idempotency_key,
        "supersession_key": record.supersession_key,
        "correlation_id": record.correlation_id,
        "last_run_id": record.last_run_id,
        "boundary_sequence": record.boundary_sequence,
        "superseded_by": record.superseded_by,
        "aggregate_id": record.aggregate_id,
        "abandon_reason": (
            None if reason is None else _ABANDON_REASON.dump_python(reason, mode="json")
        ),
        "recovery_count": record.recovery_count,
        "history": [_encode_history(entry) for entry in record.history],
    }
    try:
        return orjson.dumps(fields).decode()
    except TypeError:
        return dumps(encode_input(record))


def decode_input(data: Mapping[str, Any]) -> InputRecord:
    """The record ``data`` encodes. Its payload (most of the bytes, and most of the decoding
    time: it is validated like a message) is decoded when first read
    (:meth:`InputRecord.deferred`), so that loading a long queue decodes only what is used."""
    return _decoded(data, functools.partial(_decode_deferred, data["payload"]))


def decode_input_text(text: str) -> InputRecord:
    """:func:`decode_input` of the JSON ``text``. Until its payload is read, the record keeps
    ``text`` (one string) rather than the parsed payload (a few dozen objects, each one more for
    the garbage collector to walk, for each of a long queue's inputs); reading it parses
    ``text`` again."""
    # The record's own fields are the worker's (no integer there is wider than 64 bits), and
    # the payload, where an external one could be, is read apart, by parse_json: so no walk.
    return _decoded(_loads(text), functools.partial(_decode_deferred_text, text))


def parse_json(text: str | bytes) -> Any:
    """orjson (several times faster than ``json``), or ``json`` for what orjson refuses (a
    ``NaN``, a float beyond the double's range) or reads otherwise: an integer wider than 64
    bits, which orjson reads as a float and ``json`` exactly (:mod:`worker.core.floats`)."""
    value = _loads(text)
    if holds_float(value, read_as_wide_int):
        return json.loads(text)
    return value


def _loads(text: str | bytes) -> Any:
    """orjson, or ``json`` for what orjson refuses; an integer wider than 64 bits may come
    back as a float (see :func:`parse_json`)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _decoded(data: Mapping[str, Any], deferred: Callable[[], dict[str, Any]]) -> InputRecord:
    reason = data["abandon_reason"]
    return InputRecord.deferred(
        deferred,
        input_id=UUID(data["input_id"]),
        kind=_KINDS[data["kind"]],
        phase=_PHASES[data["phase"]],
        lane=_LANES[data["lane"]],
        admission_seq=data["admission_seq"],
        durability=_DURABILITIES[data["durability"]],
        created_at=decode_time(data["created_at"]),
        updated_at=decode_time(data["updated_at"]),
        attempt_count=data["attempt_count"],
        idempotency_key=data["idempotency_key"],
        supersession_key=data["supersession_key"],
        correlation_id=data["correlation_id"],
        last_run_id=_decode_opt_uuid(data["last_run_id"]),
        boundary_sequence=data["boundary_sequence"],
        superseded_by=_decode_opt_uuid(data["superseded_by"]),
        aggregate_id=_decode_opt_uuid(data["aggregate_id"]),
        abandon_reason=None if reason is None else _ABANDON_REASON.validate_python(reason),
        recovery_count=data["recovery_count"],
        history=tuple(_decode_history(entry) for entry in data["history"]),
    )


def _decode_deferred_text(text: str) -> dict[str, Any]:
    return _decode_deferred(parse_json(text)["payload"])


def _decode_deferred(payload: Json) -> dict[str, Any]:
    return {"payload": decode_payload(payload)}


_HISTORY_KEPT = 65_536
_histories: IdentityCache[Json] = IdentityCache(_HISTORY_KEPT)
"""Encoded history entries by the entry's identity: a record's history is written again with
every update of the record, each entry the same object."""


def _encode_history(entry: HistoryEntry) -> Json:
    """(The encoding is shared: callers serialise it and never change it.)"""
    kept = _histories.get(entry)
    if kept is not None:
        return kept
    return _histories.put(entry, {
        "at": encode_time(entry.at),
        "from_phase": None if entry.from_phase is None else entry.from_phase.value,
        "to_phase": entry.to_phase.value,
        "reason": entry.reason,
    })


def release(record: InputRecord) -> None:
    """``record`` was just written for what should be the last time (it is terminal): drop the
    encodings its writes kept. (A later write of it, a retried commit say, encodes it again.)"""
    _payloads.forget(record.payload)
    _blob_ids.forget(record.payload)
    for entry in record.history:
        _histories.forget(entry)


def _decode_history(data: Mapping[str, Any]) -> HistoryEntry:
    from_phase = data["from_phase"]
    return HistoryEntry(
        at=decode_time(data["at"]),
        from_phase=None if from_phase is None else InputPhase(from_phase),
        to_phase=InputPhase(data["to_phase"]),
        reason=data["reason"],
    )


_blob_ids: IdentityCache[tuple[str, ...]] = IdentityCache(_PAYLOADS_KEPT)
"""The blob ids of a payload by its identity (kept, like :data:`_payloads`, because every image
of a record carries the same payload object and each is written whole)."""


def blob_ids_of(record: InputRecord) -> list[str]:
    """Blob ids the stored payload refers to, in order of appearance, each once."""
    payload = record.payload
    kept = _blob_ids.get(payload)
    if kept is None:
        seen: dict[str, None] = {}
        for block in content_blocks(payload):
            if isinstance(block, BlobImageBlock):
                seen.setdefault(block.blob_id, None)
        kept = _blob_ids.put(payload, tuple(seen))
    return list(kept)


def encode_command(outcome: CommandCompleted) -> Json:
    return outcome.model_dump(mode="json")


def decode_command(data: Mapping[str, Any]) -> CommandCompleted:
    return CommandCompleted.model_validate(data)


def encode_event(event: EventEnvelope) -> Json:
    return event.model_dump(mode="json")


def encode_event_text(event: EventEnvelope) -> str:
    """:func:`encode_event` as JSON text, the same text that :func:`dumps` makes of it, without
    the dictionary in between: orjson writes the model's fields (in their order) itself, and
    writes UUIDs, aware times (UTC as ``Z``) and enums as pydantic's JSON mode does. What orjson
    refuses (an integer beyond 64 bits, a value only pydantic can convert) goes the long way."""
    try:
        return orjson.dumps(vars(event), option=orjson.OPT_UTC_Z).decode()
    except TypeError:
        return dumps(encode_event(event))


def dumps(value: Json) -> str:
    """JSON text of an encoded value: orjson (several times faster than ``json``), or ``json``
    for what orjson refuses (an integer beyond 64 bits in an executor's output, say)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def decode_event(data: Mapping[str, Any]) -> EventEnvelope:
    return EventEnvelope.model_validate(data)
