"""The runtime store in process memory: the reference the SQL stores are tested against.

:class:`MemoryRuntimeStore` implements every port of :class:`persistence.ports.RuntimeStore` and
:class:`persistence.ports.HistoryReader` over a :class:`MemoryDatabase`, the dictionaries that
stand for the tables. Several stores may share one database, each writing as its own
``writer_id``, as several workers share one SQL database.

A commit works on copies of the runtimes it touches and swaps them in only when every mutation
of every decision succeeded, so a failed commit leaves nothing behind, as a rolled-back
transaction would. It raises the same typed errors as the SQL stores for the same conflicts.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from persistence.codec import blob_ids_of, to_utc
from persistence.errors import DuplicateRow, ReceiptConflict, StoreError, VersionConflict
from persistence.memory_membership import MemberTable, MemoryMembership
from persistence.ports import (
    ANONYMOUS,
    PRUNE_BATCH,
    OutboxEntry,
    OutboxEvent,
    PruneReport,
    StoredRuntime,
    Writer,
    check_prune_arguments,
)
from schemas import CommandCompleted, EventEnvelope, RuntimePhase
from worker.core.model import (
    BoundaryReceipt,
    Decision,
    DeleteInput,
    InputRecord,
    Mutation,
    PutInput,
    PutReceipt,
    PutRuntime,
    PutSnapshot,
    RecordCommand,
    RuntimeRow,
    SessionSnapshot,
)


@dataclass
class _Stored:
    """Everything stored for one runtime (the rows of every table keyed by this runtime)."""

    row: RuntimeRow | None = None
    inputs: dict[UUID, InputRecord] = field(default_factory=dict)
    receipts: dict[tuple[UUID, int], BoundaryReceipt] = field(default_factory=dict)
    snapshot: SessionSnapshot | None = None
    commands: dict[UUID, CommandCompleted] = field(default_factory=dict)
    command_times: dict[UUID, datetime] = field(default_factory=dict)
    """When each command was processed (``processed_commands.processed_at``)."""
    writer: Writer = ANONYMOUS


@dataclass
class _Outboxed:
    position: int
    event: EventEnvelope
    sent_at: datetime | None = None
    traceparent: str | None = None
    group: str | None = None


@dataclass
class MemoryDatabase:
    """The in-memory tables; nothing survives the process."""

    runtimes: dict[str, _Stored] = field(default_factory=dict)
    outbox: dict[int, _Outboxed] = field(default_factory=dict)
    event_ids: set[UUID] = field(default_factory=set)
    next_position: int = 1
    members: MemberTable = field(default_factory=MemberTable)
    """Heartbeat rows and the watchers of each group."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by a commit, which is one transaction."""
    relay_leads: dict[str | None, object] = field(default_factory=dict)
    """The relay lease of each group: the store holding it."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MemoryRuntimeStore(MemoryMembership):
    """``RuntimeStore`` over ``database`` (a fresh one by default), recording ``writer_id`` on
    the runtime rows it writes."""

    def __init__(
        self,
        database: MemoryDatabase | None = None,
        *,
        writer_id: str | None = None,
        writer_group: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._db = MemoryDatabase() if database is None else database
        self._writer = Writer(writer_id, writer_group)
        self._clock = clock

    @property
    def database(self) -> MemoryDatabase:
        """The tables, to open another store on (as another writer)."""
        return self._db

    @property
    def _members(self) -> MemberTable:
        return self._db.members

    @property
    def writer_id(self) -> str | None:
        return self._writer.id

    def _stored(self, runtime_id: str) -> _Stored:
        return self._db.runtimes.get(runtime_id) or _Stored()

    async def load_runtime(self, runtime_id: str) -> StoredRuntime:
        stored = self._stored(runtime_id)
        live = [r for r in _in_admission_order(stored.inputs.values()) if not r.is_terminal]
        return StoredRuntime.of(stored.row, live, stored.receipts, stored.writer.id)

    async def load_runtimes(self, runtime_ids: Collection[str]) -> dict[str, StoredRuntime]:
        return {runtime_id: await self.load_runtime(runtime_id) for runtime_id in runtime_ids}

    async def find_input(
        self, runtime_id: str, input_id: UUID, idempotency_key: str | None
    ) -> UUID | None:
        stored = self._stored(runtime_id)
        if input_id in stored.inputs:
            return input_id
        if idempotency_key is None:
            return None
        return _key_owner(stored.inputs, idempotency_key)

    async def find_command(self, runtime_id: str, command_id: UUID) -> CommandCompleted | None:
        return self._stored(runtime_id).commands.get(command_id)

    async def commit(self, decisions: Sequence[Decision]) -> None:
        db = self._db
        async with db.lock:
            staged: dict[str, _Stored] = {}
            events: list[tuple[EventEnvelope, str | None]] = []
            event_ids = set(db.event_ids)
            for decision in decisions:
                for mutation in decision.mutations:
                    self._apply(staged, decision.runtime_id, mutation)
                for event in decision.events:
                    if event.event_id in event_ids:
                        raise DuplicateRow("event id", str(event.event_id))
                    event_ids.add(event.event_id)
                    events.append((event, decision.trace))
            db.runtimes.update(staged)
            for event, trace in events:
                db.outbox[db.next_position] = _Outboxed(
                    db.next_position, event, traceparent=trace, group=self._writer.group
                )
                db.next_position += 1
            db.event_ids = event_ids

    def _staged(self, staged: dict[str, _Stored], runtime_id: str) -> _Stored:
        if runtime_id not in staged:
            current = self._db.runtimes.get(runtime_id)
            staged[runtime_id] = copy.copy(current) if current else _Stored()
            for name in ("inputs", "receipts", "commands", "command_times"):
                setattr(staged[runtime_id], name, dict(getattr(staged[runtime_id], name)))
        return staged[runtime_id]

    def _apply(self, staged: dict[str, _Stored], runtime_id: str, mutation: Mutation) -> None:
        if isinstance(mutation, PutRuntime):
            target = self._staged(staged, mutation.row.runtime_id)
            _put_runtime(target, mutation)
            target.writer = self._writer
            return
        owner = (
            mutation.receipt.runtime_id
            if isinstance(mutation, PutReceipt)
            else mutation.snapshot.runtime_id
            if isinstance(mutation, PutSnapshot)
            else runtime_id
        )
        target = self._staged(staged, owner)
        if target.row is None and not isinstance(mutation, DeleteInput):
            raise StoreError(f"a row refers to runtime {owner!r}, which is not stored")
        match mutation:
            case PutInput(record=record, insert=insert):
                _put_input(target, owner, record, insert=insert)
            case DeleteInput(input_id=input_id):
                target.inputs.pop(input_id, None)
            case PutReceipt(receipt=receipt):
                key = (receipt.run_id, receipt.sequence)
                if key in target.receipts:
                    raise ReceiptConflict(
                        f"runtime {owner!r} run {receipt.run_id} sequence {receipt.sequence}"
                    )
                _check_times(receipt.committed_at)
                target.receipts[key] = receipt
            case PutSnapshot(snapshot=snapshot):
                _check_times(snapshot.committed_at)
                target.snapshot = snapshot
            case RecordCommand(command_id=command_id, outcome=outcome, at=at):
                if command_id in target.commands:
                    raise DuplicateRow("command id", f"command {command_id}")
                _check_times(at)
                target.commands[command_id] = outcome
                target.command_times[command_id] = to_utc(at)

    async def runtimes_with_pending_work(
        self, limit: int = 10_000, *, group: str | None = None,
        exclude_writers: Collection[str] = (),
    ) -> list[str]:
        pending = [
            runtime_id
            for runtime_id, stored in self._db.runtimes.items()
            if stored.row is not None
            and stored.writer.id not in exclude_writers
            and (group is None or stored.writer.group in (None, group))
            and (
                stored.row.phase is RuntimePhase.RUNNING
                or any(not r.is_terminal for r in stored.inputs.values())
            )
        ]
        return sorted(pending)[:limit]

    async def load_snapshot(self, runtime_id: str) -> SessionSnapshot | None:
        return self._stored(runtime_id).snapshot

    async def get_input(self, runtime_id: str, input_id: UUID) -> InputRecord | None:
        return self._stored(runtime_id).inputs.get(input_id)

    async def list_inputs(self, runtime_id: str) -> list[InputRecord]:
        return _in_admission_order(self._stored(runtime_id).inputs.values())

    async def list_receipts(self, runtime_id: str, limit: int = 20) -> list[BoundaryReceipt]:
        receipts = sorted(
            self._stored(runtime_id).receipts.values(),
            key=lambda r: (r.committed_at, r.sequence, r.run_id),
            reverse=True,
        )
        return receipts[:limit]

    async def list_events(self, runtime_id: str, limit: int = 20) -> list[EventEnvelope]:
        mine = [o.event for o in self._db.outbox.values() if o.event.runtime_id == runtime_id]
        return mine[::-1][:limit]

    async def fetch_unsent_events(self, limit: int) -> list[OutboxEvent]:
        group = self._writer.group
        unsent = (o for o in self._db.outbox.values()
                  if o.sent_at is None and o.group in (None, group))
        return [OutboxEvent.of(o.position, o.event, o.traceparent)
                for o in itertools.islice(unsent, limit)]

    async def mark_events_sent(self, positions: Sequence[int]) -> None:
        now = self._clock()
        for position in positions:
            outboxed = self._db.outbox.get(position)
            if outboxed is not None and outboxed.sent_at is None:
                outboxed.sent_at = now

    async def referenced_blob_ids(self) -> set[str]:
        return {
            blob_id
            for stored in self._db.runtimes.values()
            for record in stored.inputs.values()
            for blob_id in blob_ids_of(record)
        }

    async def prune(
        self, now: datetime, *, sent_events_before: datetime, terminal_before: datetime,
        batch: int = PRUNE_BATCH,
    ) -> PruneReport:
        """The rules of :meth:`persistence.ports.RetentionStore.prune`, all at once (nothing
        here holds a lock another writer waits on for long)."""
        check_prune_arguments(now, sent_events_before, terminal_before, batch)
        async with self._db.lock:
            sent = [p for p, o in self._db.outbox.items()
                    if o.sent_at is not None and o.sent_at < to_utc(sent_events_before)]
            for position in sent:
                del self._db.outbox[position]
            report = PruneReport(events=len(sent))
            for stored in self._db.runtimes.values():
                report += _prune_runtime(stored, to_utc(terminal_before))
        return report

    # HistoryReader: read-only, whole histories, for the history checker.

    async def read_runtime_row(self, runtime_id: str) -> RuntimeRow | None:
        return self._stored(runtime_id).row

    async def read_receipts(self, runtime_id: str) -> list[BoundaryReceipt]:
        return sorted(
            self._stored(runtime_id).receipts.values(),
            key=lambda r: (r.committed_at, r.sequence, r.run_id),
        )

    async def read_commands(self, runtime_id: str) -> list[CommandCompleted]:
        return list(self._stored(runtime_id).commands.values())

    async def read_outbox(self, runtime_id: str) -> list[OutboxEntry]:
        return [
            OutboxEntry(o.position, o.event, o.sent_at is not None)
            for o in sorted(self._db.outbox.values(), key=lambda o: o.position)
            if o.event.runtime_id == runtime_id
        ]

    async def ping(self) -> None:
        return None

    async def lead_relay(self) -> bool:
        holder = self._db.relay_leads.setdefault(self._writer.group, self)
        return holder is self

    async def release_relay(self) -> None:
        if self._db.relay_leads.get(self._writer.group) is self:
            del self._db.relay_leads[self._writer.group]

    async def close(self) -> None:
        await self.release_relay()


def _prune_runtime(stored: _Stored, before: datetime) -> PruneReport:
    """Delete one runtime's old terminal inputs, then its old receipts none of whose inputs is
    live, then its old command records."""
    old = [i for i, r in stored.inputs.items() if r.is_terminal and to_utc(r.updated_at) < before]
    for input_id in old:
        del stored.inputs[input_id]
    live = {i for i, r in stored.inputs.items() if not r.is_terminal}
    receipts = [k for k, r in stored.receipts.items()
                if to_utc(r.committed_at) < before and live.isdisjoint(r.contributing_input_ids)]
    for key in receipts:
        del stored.receipts[key]
    commands = [c for c, at in stored.command_times.items() if at < before]
    for command_id in commands:
        del stored.commands[command_id]
        del stored.command_times[command_id]
    return PruneReport(inputs=len(old), receipts=len(receipts), commands=len(commands))


def _in_admission_order(records: Iterable[InputRecord]) -> list[InputRecord]:
    return sorted(records, key=lambda r: (r.admission_seq, r.input_id))


def _key_owner(records: dict[UUID, InputRecord], key: str) -> UUID | None:
    return next((r.input_id for r in records.values() if r.idempotency_key == key), None)


def _check_times(*times: datetime) -> None:
    for value in times:
        to_utc(value)


def _put_runtime(target: _Stored, mutation: PutRuntime) -> None:
    current = target.row
    expected = mutation.expected_version
    stored_version = 0 if current is None else current.version
    if stored_version != expected or (current is not None and expected == 0):
        raise VersionConflict(mutation.row.runtime_id, expected)
    _check_times(mutation.row.updated_at)
    target.row = mutation.row


def _put_input(target: _Stored, runtime_id: str, record: InputRecord, *, insert: bool) -> None:
    exists = record.input_id in target.inputs
    if insert and exists:
        raise DuplicateRow("input id", f"input {record.input_id} key {record.idempotency_key!r}")
    if not insert and not exists:
        raise StoreError(f"runtime {runtime_id!r}: input {record.input_id} is not stored")
    if record.idempotency_key is not None:
        owner = _key_owner(target.inputs, record.idempotency_key)
        if owner is not None and owner != record.input_id:
            raise DuplicateRow(
                "idempotency key", f"input {record.input_id} key {record.idempotency_key!r}"
            )
    _check_times(record.created_at, record.updated_at)
    target.inputs[record.input_id] = record
