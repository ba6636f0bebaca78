"""Fault-injecting wrappers around the persistence ports, for the driver contract suite.

:class:`FaultyStore` and :class:`FaultyBlobStore` pass every call through to a real store and
count it; ``fail_next`` arms one chosen call to fail. A fault "before" raises without touching the
inner store, so nothing was written, like a connection refused before the statement. A fault
"after" lets the inner store do its work first and then raises, like a connection that died after
the server had already committed: the case :class:`CommitOutcomeUnknown` exists for.

Both wrappers may share one ``journal`` (a list of ``"store.<method>"`` / ``"blobs.<method>"``
entries in call order), so a test can tell that the images went out before the commit.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeVar
from uuid import UUID

from persistence.errors import StoreError, StoreUnavailable
from persistence.ports import (
    PRUNE_BATCH,
    BlobInfo,
    BlobStore,
    MemberRow,
    OutboxEvent,
    PruneReport,
    RuntimeStore,
    StoredBlob,
    StoredRuntime,
)
from schemas import CommandCompleted, EventEnvelope
from worker.core.model import BoundaryReceipt, Decision, InputRecord, SessionSnapshot

When = Literal["before", "after"]

_T = TypeVar("_T")

STORE_METHODS = frozenset(
    {
        "load_runtime",
        "load_runtimes",
        "find_input",
        "find_command",
        "commit",
        "runtimes_with_pending_work",
        "load_snapshot",
        "get_input",
        "list_inputs",
        "list_receipts",
        "list_events",
        "fetch_unsent_events",
        "prune",
        "mark_events_sent",
        "lead_relay",
        "release_relay",
        "referenced_blob_ids",
        "ping",
        "close",
        "heartbeat",
        "heartbeat_members",
        "members",
        "set_leaving",
        "leave",
        "watch",
    }
)
BLOB_METHODS = frozenset({"put_image", "get", "exists", "delete", "list_blobs", "ping", "close"})


@dataclass(frozen=True)
class Fault:
    when: When
    error: StoreError


class FaultPlan:
    """Call counts and armed faults of one wrapper; faults of a method fire in arming order."""

    def __init__(self, prefix: str, methods: frozenset[str], journal: list[str] | None) -> None:
        self._prefix = prefix
        self._methods = methods
        self._journal = journal
        self._armed: dict[str, deque[Fault]] = {}
        self.calls: Counter[str] = Counter()

    def fail_next(
        self,
        method: str,
        when: When = "before",
        error: StoreError | None = None,
        *,
        times: int = 1,
    ) -> None:
        if method not in self._methods:
            raise ValueError(f"{self._prefix} has no method {method!r}")
        if when not in ("before", "after"):
            raise ValueError(f"when must be 'before' or 'after', not {when!r}")
        fault = Fault(when, error or StoreUnavailable(f"injected fault: {method} ({when})"))
        self._armed.setdefault(method, deque()).extend([fault] * times)

    def armed(self, method: str) -> int:
        """Faults still waiting for ``method`` (a test checks its fault really fired)."""
        return len(self._armed.get(method, ()))

    async def through(self, method: str, call: Callable[[], Awaitable[_T]]) -> _T:
        self.calls[method] += 1
        if self._journal is not None:
            self._journal.append(f"{self._prefix}.{method}")
        pending = self._armed.get(method)
        fault = pending.popleft() if pending else None
        if fault is not None and fault.when == "before":
            raise fault.error
        result = await call()
        if fault is not None:
            raise fault.error
        return result


class FaultyStore:
    """A :class:`RuntimeStore` that fails chosen calls of the store it wraps."""

    def __init__(self, inner: RuntimeStore, *, journal: list[str] | None = None) -> None:
        self.inner = inner
        self.plan = FaultPlan("store", STORE_METHODS, journal)

    @property
    def calls(self) -> Counter[str]:
        return self.plan.calls

    def fail_next(
        self, method: str, when: When = "before", error: StoreError | None = None, *, times: int = 1
    ) -> None:
        self.plan.fail_next(method, when, error, times=times)

    async def load_runtime(self, runtime_id: str) -> StoredRuntime:
        return await self.plan.through("load_runtime", lambda: self.inner.load_runtime(runtime_id))

    async def load_runtimes(self, runtime_ids: Collection[str]) -> dict[str, StoredRuntime]:
        return await self.plan.through("load_runtimes",
                                       lambda: self.inner.load_runtimes(runtime_ids))

    async def find_input(
        self, runtime_id: str, input_id: UUID, idempotency_key: str | None
    ) -> UUID | None:
        return await self.plan.through(
            "find_input", lambda: self.inner.find_input(runtime_id, input_id, idempotency_key)
        )

    async def find_command(self, runtime_id: str, command_id: UUID) -> CommandCompleted | None:
        return await self.plan.through(
            "find_command", lambda: self.inner.find_command(runtime_id, command_id)
        )

    async def commit(self, decisions: Sequence[Decision]) -> None:
        await self.plan.through("commit", lambda: self.inner.commit(decisions))

    @property
    def writer_id(self) -> str | None:
        return self.inner.writer_id

    async def runtimes_with_pending_work(
        self, limit: int = 10_000, *, group: str | None = None,
        exclude_writers: Collection[str] = (),
    ) -> list[str]:
        return await self.plan.through(
            "runtimes_with_pending_work",
            lambda: self.inner.runtimes_with_pending_work(limit, group=group,
                                                          exclude_writers=exclude_writers),
        )

    async def load_snapshot(self, runtime_id: str) -> SessionSnapshot | None:
        return await self.plan.through(
            "load_snapshot", lambda: self.inner.load_snapshot(runtime_id)
        )

    async def get_input(self, runtime_id: str, input_id: UUID) -> InputRecord | None:
        return await self.plan.through(
            "get_input", lambda: self.inner.get_input(runtime_id, input_id)
        )

    async def list_inputs(self, runtime_id: str) -> list[InputRecord]:
        return await self.plan.through("list_inputs", lambda: self.inner.list_inputs(runtime_id))

    async def list_receipts(self, runtime_id: str, limit: int = 20) -> list[BoundaryReceipt]:
        return await self.plan.through(
            "list_receipts", lambda: self.inner.list_receipts(runtime_id, limit)
        )

    async def list_events(self, runtime_id: str, limit: int = 20) -> list[EventEnvelope]:
        return await self.plan.through(
            "list_events", lambda: self.inner.list_events(runtime_id, limit)
        )

    async def fetch_unsent_events(self, limit: int) -> list[OutboxEvent]:
        return await self.plan.through(
            "fetch_unsent_events", lambda: self.inner.fetch_unsent_events(limit)
        )

    async def mark_events_sent(self, positions: Sequence[int]) -> None:
        await self.plan.through("mark_events_sent", lambda: self.inner.mark_events_sent(positions))

    async def lead_relay(self) -> bool:
        return await self.plan.through("lead_relay", self.inner.lead_relay)

    async def release_relay(self) -> None:
        await self.plan.through("release_relay", self.inner.release_relay)

    async def referenced_blob_ids(self) -> set[str]:
        return await self.plan.through("referenced_blob_ids", self.inner.referenced_blob_ids)

    async def ping(self) -> None:
        await self.plan.through("ping", self.inner.ping)

    async def close(self) -> None:
        await self.plan.through("close", self.inner.close)

    async def heartbeat(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = ""
    ) -> list[str]:
        return await self.plan.through(
            "heartbeat",
            lambda: self.inner.heartbeat(worker_id, now=now, ttl=ttl, group=group),
        )

    async def heartbeat_members(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = "",
        version: str = "", shards: Sequence[str] = (), announce: bool = False,
    ) -> list[MemberRow]:
        return await self.plan.through("heartbeat_members", lambda: self.inner.heartbeat_members(
            worker_id, now=now, ttl=ttl, group=group, version=version, shards=shards,
            announce=announce))

    async def members(self, group: str = "", *, now: datetime, ttl: timedelta
                      ) -> list[MemberRow]:
        return await self.plan.through(
            "members", lambda: self.inner.members(group, now=now, ttl=ttl))

    async def set_leaving(self, worker_id: str) -> None:
        await self.plan.through("set_leaving", lambda: self.inner.set_leaving(worker_id))

    async def leave(self, worker_id: str) -> None:
        await self.plan.through("leave", lambda: self.inner.leave(worker_id))

    async def watch(self, group: str, on_change: Callable[[], None]) -> bool:
        return await self.plan.through("watch", lambda: self.inner.watch(group, on_change))

    async def prune(
        self, now: datetime, *, sent_events_before: datetime, terminal_before: datetime,
        batch: int = PRUNE_BATCH,
    ) -> PruneReport:
        return await self.plan.through("prune", lambda: self.inner.prune(
            now, sent_events_before=sent_events_before, terminal_before=terminal_before,
            batch=batch,
        ))


class FaultyBlobStore:
    """A :class:`BlobStore` that fails chosen calls of the blob store it wraps."""

    def __init__(self, inner: BlobStore, *, journal: list[str] | None = None) -> None:
        self.inner = inner
        self.plan = FaultPlan("blobs", BLOB_METHODS, journal)

    @property
    def max_blob_bytes(self) -> int:
        return self.inner.max_blob_bytes

    @max_blob_bytes.setter
    def max_blob_bytes(self, value: int) -> None:
        self.inner.max_blob_bytes = value

    @property
    def calls(self) -> Counter[str]:
        return self.plan.calls

    def fail_next(
        self, method: str, when: When = "before", error: StoreError | None = None, *, times: int = 1
    ) -> None:
        self.plan.fail_next(method, when, error, times=times)

    async def put_image(self, media_type: str, data_base64: str) -> str:
        return await self.plan.through(
            "put_image", lambda: self.inner.put_image(media_type, data_base64)
        )

    async def get(self, blob_id: str) -> StoredBlob:
        return await self.plan.through("get", lambda: self.inner.get(blob_id))

    async def exists(self, blob_id: str) -> bool:
        return await self.plan.through("exists", lambda: self.inner.exists(blob_id))

    async def delete(self, blob_id: str) -> None:
        await self.plan.through("delete", lambda: self.inner.delete(blob_id))

    async def list_blobs(self) -> list[BlobInfo]:
        return await self.plan.through("list_blobs", self.inner.list_blobs)

    async def ping(self) -> None:
        await self.plan.through("ping", self.inner.ping)

    async def close(self) -> None:
        await self.plan.through("close", self.inner.close)


def _conforms(store: FaultyStore, blobs: FaultyBlobStore) -> tuple[RuntimeStore, BlobStore]:
    """Never called: makes the type checker prove both wrappers implement their Protocol."""
    return store, blobs
