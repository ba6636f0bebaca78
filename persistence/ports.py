"""The ports of the persistence layer, as ``typing.Protocol`` s, one per concern.

Runtime state (:class:`RuntimeStateStore`), the outbox (:class:`OutboxStore`), inspection
(:class:`InspectionStore`), membership (:class:`MembershipStore`), retention
(:class:`RetentionStore`) and the history checker's reads (:class:`HistoryReader`) are kept
apart so that each caller names only what it uses; :class:`RuntimeStore` is the first five,
as :func:`persistence.factory.open_runtime_store` returns it. Blobs: :class:`BlobStore`.

Every implementation (in-memory, SQLite, PostgreSQL; memory, filesystem, S3) passes the same
contract suite under ``tests/contract``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable
from uuid import UUID

from persistence.outbox_port import OutboxEvent as OutboxEvent
from persistence.outbox_port import OutboxStore as OutboxStore
from schemas import CommandCompleted, EventEnvelope, InputPhase
from worker.core.model import BoundaryReceipt, Decision, InputRecord, RuntimeRow, SessionSnapshot


@dataclass(frozen=True)
class Writer:
    """Who a store writes as, recorded on every runtime row it writes: the worker's ``id``
    and its deployment's ``group`` (the topology prefix). Work left behind is resumed only by
    live workers of the same group, so deployments sharing one database never take each
    other's runtimes."""

    id: str | None = None
    group: str | None = None


ANONYMOUS = Writer()
"""A store opened by a tool (``inspect``, ``migrate``, tests): no worker, no group."""

APPLIED_PHASES = frozenset({InputPhase.APPLIED, InputPhase.APPLIED_PENDING_CONSUMPTION})


def receipts_named_by(inputs: Iterable[InputRecord]) -> frozenset[tuple[UUID, int]]:
    """The (run id, sequence) pairs a cold load looks up: those an applied input names.

    An applied input names the boundary that applied it; whether that boundary's receipt was
    committed is what recovery needs to know about it. Receipts no loaded input names are not
    read.
    """
    return frozenset(
        (r.last_run_id, r.boundary_sequence)
        for r in inputs
        if r.phase in APPLIED_PHASES
        and r.last_run_id is not None
        and r.boundary_sequence is not None
    )


@dataclass(frozen=True)
class StoredRuntime:
    """What a cold load reads: the runtime row, its non-terminal inputs, and which of the
    (run id, sequence) pairs named by those inputs have a committed boundary receipt."""

    row: RuntimeRow | None
    inputs: tuple[InputRecord, ...]
    receipts: frozenset[tuple[UUID, int]]
    last_writer: str | None = None
    """The writer id recorded on the runtime row by the last commit that wrote it."""

    @classmethod
    def of(
        cls,
        row: RuntimeRow | None,
        inputs: Iterable[InputRecord],
        stored_receipts: Container[tuple[UUID, int]],
        last_writer: str | None = None,
    ) -> StoredRuntime:
        """The cold load of ``row`` and its non-terminal ``inputs`` (in admission order), given
        the (run id, sequence) keys of receipts that are stored (it may hold more)."""
        loaded = tuple(inputs)
        named = receipts_named_by(loaded)
        return cls(row, loaded, frozenset(key for key in named if key in stored_receipts),
                   last_writer)


@dataclass(frozen=True)
class OutboxEntry:
    """An outbox event and whether the relay has marked it sent."""

    position: int
    event: EventEnvelope
    sent: bool


class RuntimeStateStore(Protocol):
    """The worker's own reads and writes: runtimes, their inputs, receipts and snapshots."""

    @property
    def writer_id(self) -> str | None:
        """Recorded on every runtime row this store writes (the worker's id, given when the
        store is opened), so that work a worker left behind can be told from work a live
        worker is doing."""
        ...

    async def load_runtime(self, runtime_id: str) -> StoredRuntime:
        """Row + non-terminal inputs + receipts present for applied inputs."""
        ...

    async def load_runtimes(self, runtime_ids: Collection[str]) -> dict[str, StoredRuntime]:
        """:meth:`load_runtime` of each of ``runtime_ids`` (every one is in the answer), read
        at once from one snapshot of the store."""
        ...

    async def find_input(
        self, runtime_id: str, input_id: UUID, idempotency_key: str | None
    ) -> UUID | None:
        """Id of a stored input with this id or this idempotency key (terminal ones too)."""
        ...

    async def find_command(self, runtime_id: str, command_id: UUID) -> CommandCompleted | None:
        """The stored outcome of an already processed command."""
        ...

    async def commit(self, decisions: Sequence[Decision]) -> None:
        """Apply every decision's mutations and outbox events in ONE transaction.

        Each ``PutRuntime`` is a compare-and-set on the version inside that transaction.
        Raises VersionConflict, ReceiptConflict/DuplicateRow, StoreUnavailable or
        CommitOutcomeUnknown; on any error nothing was written (except, for the last, maybe all).
        """
        ...

    async def runtimes_with_pending_work(
        self, limit: int = 10_000, *, group: str | None = None,
        exclude_writers: Collection[str] = (),
    ) -> list[str]:
        """Runtimes with a queued, staged or applied input, or a run in progress (stored as
        ``running``), whose row was last written by none of ``exclude_writers`` and, when
        ``group`` is given, by a writer of that group or of none (rows written before groups
        were recorded, or by a tool)."""
        ...

    async def load_snapshot(self, runtime_id: str) -> SessionSnapshot | None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached."""
        ...


class InspectionStore(Protocol):
    """Read-only queries for operators (``inspect``, ``blobs gc``) and tests: never on the
    worker's path.

    ``referenced_blob_ids`` is here rather than in a port of its own: like the others it only
    reads what is stored, for a command an operator runs, and the worker never calls it.
    """

    async def get_input(self, runtime_id: str, input_id: UUID) -> InputRecord | None: ...

    async def list_inputs(self, runtime_id: str) -> list[InputRecord]:
        """Every stored input of the runtime (terminal ones too), in admission order."""
        ...

    async def list_receipts(self, runtime_id: str, limit: int = 20) -> list[BoundaryReceipt]:
        """Latest receipts first."""
        ...

    async def list_events(self, runtime_id: str, limit: int = 20) -> list[EventEnvelope]:
        """Latest outbox events of the runtime first (sent or not)."""
        ...

    async def referenced_blob_ids(self) -> set[str]:
        """Every blob id referenced by a stored input (for the blob garbage collector)."""
        ...


@dataclass(frozen=True)
class MemberRow:
    """A worker's heartbeat row: last seen, version, the shards it consumed then, and whether
    it is leaving (draining: its shards go to others, but its work is not taken over)."""

    worker_id: str
    last_seen: datetime
    version: str = ""
    shards: tuple[str, ...] = ()
    leaving: bool = False


class MembershipStore(Protocol):
    """What worker membership uses: the heartbeat rows of the live workers."""

    async def heartbeat(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = ""
    ) -> list[str]:
        """Record that ``worker_id`` (of ``group``) is alive at ``now``, forget the workers of
        the group last seen before ``now - ttl``, and return the live ones' ids, sorted
        (``worker_id`` among them). One transaction."""
        ...

    async def heartbeat_members(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = "",
        version: str = "", shards: Sequence[str] = (), announce: bool = False,
    ) -> list[MemberRow]:
        """:meth:`heartbeat` recording ``version`` and ``shards``, returning the live rows by
        id; :meth:`watch` ers are told when ``announce`` is set or a stale row went."""
        ...

    async def members(self, group: str = "", *, now: datetime, ttl: timedelta
                      ) -> list[MemberRow]:
        """The rows of ``group`` seen at ``now - ttl`` or later, sorted by id; writes nothing."""

    async def set_leaving(self, worker_id: str) -> None:
        """Mark the worker's row as leaving and tell the watchers of its group (idempotent)."""

    async def leave(self, worker_id: str) -> None:
        """Delete the worker's heartbeat row and tell the watchers of its group (idempotent)."""

    async def watch(self, group: str, on_change: Callable[[], None]) -> bool:
        """Call ``on_change`` whenever the membership of ``group`` may have changed, until
        cancelled. Returns False at once when the store cannot notify (then poll); raises a
        ``StoreError`` when the notification channel is lost (watch again later)."""
        raise NotImplementedError


@dataclass(frozen=True)
class PruneReport:
    """Rows one :meth:`RetentionStore.prune` deleted, per table."""

    events: int = 0
    inputs: int = 0
    receipts: int = 0
    commands: int = 0

    @property
    def total(self) -> int:
        return self.events + self.inputs + self.receipts + self.commands

    def counts(self) -> dict[str, int]:
        """Table name → rows deleted (the ``table`` label of the retention counter)."""
        return {"event_outbox": self.events, "inputs": self.inputs,
                "boundary_receipts": self.receipts, "processed_commands": self.commands}

    def __add__(self, other: PruneReport) -> PruneReport:
        return PruneReport(self.events + other.events, self.inputs + other.inputs,
                           self.receipts + other.receipts, self.commands + other.commands)


PRUNE_BATCH = 1000
"""Rows one prune deletes per table and transaction: no run holds its locks for long."""


def check_prune_arguments(
    now: datetime, sent_events_before: datetime, terminal_before: datetime, batch: int
) -> None:
    """Refuse cutoffs in the future (they would delete what was just written) and empty
    batches; every store checks the same way."""
    for name, cutoff in (("sent_events_before", sent_events_before),
                         ("terminal_before", terminal_before)):
        if cutoff > now:
            raise ValueError(f"{name} {cutoff.isoformat()} is after now ({now.isoformat()})")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")


class RetentionStore(Protocol):
    """What the pruner uses: deleting what is no longer needed, so the tables stop growing."""

    async def prune(
        self, now: datetime, *, sent_events_before: datetime, terminal_before: datetime,
        batch: int = PRUNE_BATCH,
    ) -> PruneReport:
        """Delete, in transactions of at most ``batch`` rows per table, until none is left:

        - outbox events marked sent before ``sent_events_before`` (unsent ones never);
        - inputs in a terminal phase (consumed, abandoned, superseded, coalesced) last updated
          before ``terminal_before``: never a live input;
        - boundary receipts committed before ``terminal_before`` none of whose contributing
          inputs is live (a live applied input still needs its receipt at a cold load);
        - processed commands recorded before ``terminal_before``.

        Runtime rows and session snapshots are never deleted. What this keeps is what dedupe
        promises: inside the window (``terminal_before`` is ``now`` less the dedupe window) a
        redelivered or re-published input id, idempotency key or command id is still found by
        ``find_input`` / ``find_command``; once pruned, it is accepted as new.

        Safe to run from several workers at once: each deletes what it finds, a row deleted by
        another is simply not counted twice (PostgreSQL skips rows another prune has locked).
        Raises ``ValueError`` when a cutoff is after ``now``, ``StoreUnavailable`` when the
        database is away (what earlier batches deleted stays deleted).
        """
        ...


class RuntimeStore(
    RuntimeStateStore, OutboxStore, InspectionStore, MembershipStore, RetentionStore, Protocol
):
    """Every port of one runtime database, as opened by the factory; whoever opened it closes
    it."""

    async def close(self) -> None: ...


@runtime_checkable
class HistoryReader(Protocol):
    """Read-only, unabridged queries for the history checker (``meerkat-worker verify``).

    Kept apart from :class:`RuntimeStore`: the worker never needs them, and they read whole
    histories (every receipt, every outbox event) where the worker reads only what is live.
    The SQL and in-memory stores implement it too.
    """

    async def read_runtime_row(self, runtime_id: str) -> RuntimeRow | None:
        """The stored runtime row, or None when the runtime was never stored."""
        ...

    async def list_inputs(self, runtime_id: str) -> list[InputRecord]:
        """Every stored input of the runtime (terminal ones too), in admission order."""
        ...

    async def read_receipts(self, runtime_id: str) -> list[BoundaryReceipt]:
        """Every boundary receipt of the runtime, oldest first."""
        ...

    async def read_commands(self, runtime_id: str) -> list[CommandCompleted]:
        """Every stored command outcome of the runtime."""
        ...

    async def read_outbox(self, runtime_id: str) -> list[OutboxEntry]:
        """Every outbox event of the runtime, sent or not, in outbox order."""
        ...


@dataclass(frozen=True)
class StoredBlob:
    blob_id: str
    media_type: str
    data_base64: str


@dataclass(frozen=True)
class BlobInfo:
    blob_id: str
    size: int
    modified_at: datetime


class BlobStore(Protocol):
    max_blob_bytes: int

    async def put_image(self, media_type: str, data_base64: str) -> str:
        """Store under the content address (idempotent) and return the blob id."""
        ...

    async def get(self, blob_id: str) -> StoredBlob:
        """Raise BlobNotFound, InvalidBlobId or BlobCorrupt."""
        ...

    async def exists(self, blob_id: str) -> bool: ...

    async def delete(self, blob_id: str) -> None:
        """Idempotent."""
        ...

    async def list_blobs(self) -> list[BlobInfo]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
