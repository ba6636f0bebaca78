"""Fixtures and builders of the driver contract suite.

A :class:`Harness` is one worker process: a :class:`RuntimeDriver` over fault-injecting wrappers
of a runtime store and a blob store. :meth:`Harness.restart` is a new process on the same stores
(a fresh driver with an empty cache and fresh wrappers), so "after a restart" means exactly what
it means in production: everything the new driver knows, it read back from the store.

``harness`` runs over every runtime store (memory, SQLite, PostgreSQL) with an in-memory blob
store; ``image_harness`` runs over every runtime store and every blob store (memory, file system,
S3) and is kept for the few tests about images.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from persistence.blobs import FileBlobStore, MemoryBlobStore
from persistence.ports import BlobStore, RuntimeStore
from schemas import (
    AbandonInput,
    Destroy,
    Durability,
    EventCode,
    ExternalEventInput,
    InputHeader,
    InputPhase,
    OperatorSource,
    PromptInput,
    Reset,
    Resume,
    Retire,
    Stop,
    TextBlock,
)
from schemas.content import ContentBlock
from tests.contract.faults import FaultyBlobStore, FaultyStore
from tests.fixtures.s3 import S3Server, new_s3_blob_store
from worker.driver import RuntimeDriver, StartedRun
from worker.executors.echo import execute

BLOB_STORE_KINDS = [
    pytest.param("memory", marks=pytest.mark.unit),
    pytest.param("filesystem", marks=pytest.mark.unit),
    pytest.param("s3", marks=pytest.mark.integration),
]


@dataclass
class Harness:
    """One worker process on shared stores; ``store``/``blobs`` are its faulty views of them."""

    inner_store: RuntimeStore
    inner_blobs: BlobStore
    journal: list[str] = field(default_factory=list)
    store: FaultyStore = field(init=False)
    blobs: FaultyBlobStore = field(init=False)
    driver: RuntimeDriver = field(init=False)

    def __post_init__(self) -> None:
        self.store = FaultyStore(self.inner_store, journal=self.journal)
        self.blobs = FaultyBlobStore(self.inner_blobs, journal=self.journal)
        self.driver = RuntimeDriver(self.store, self.blobs)

    def restart(self) -> Harness:
        """A new process: same stores, nothing cached, no faults armed."""
        return Harness(self.inner_store, self.inner_blobs)

    async def phases(self, runtime_id: str) -> dict[UUID, InputPhase]:
        """Every stored input of the runtime and its phase, read from the store itself."""
        return {r.input_id: r.phase for r in await self.inner_store.list_inputs(runtime_id)}

    async def event_codes(self, runtime_id: str) -> list[EventCode]:
        """Codes of the runtime's outbox events, oldest first."""
        events = await self.inner_store.list_events(runtime_id, limit=10_000)
        return [e.code for e in reversed(events)]


@pytest.fixture(params=BLOB_STORE_KINDS)
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """Each blob store implementation in turn, empty (S3: a bucket of this test's own)."""
    kind: str = request.param
    store: BlobStore
    if kind == "memory":
        store = MemoryBlobStore()
    elif kind == "filesystem":
        store = FileBlobStore(tmp_path / "blobs")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        s3 = new_s3_blob_store(server)
        await s3.ensure_bucket()
        store = s3
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def harness(runtime_store: RuntimeStore) -> Harness:
    """A driver over each runtime store, with images kept in memory."""
    return Harness(runtime_store, MemoryBlobStore())


@pytest.fixture
def image_harness(runtime_store: RuntimeStore, blob_store: BlobStore) -> Harness:
    """A driver over each runtime store and each blob store."""
    return Harness(runtime_store, blob_store)


# Builders: fresh ids on every call, so tests can share one PostgreSQL database.

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


def new_runtime_id() -> str:
    return f"rt:driver:{uuid4()}"


def prompt(
    text: str = "hello",
    *,
    key: str | None = None,
    input_id: UUID | None = None,
    durability: Durability = Durability.DURABLE,
    images: tuple[ContentBlock, ...] = (),
) -> PromptInput:
    header = InputHeader(
        id=input_id or uuid4(),
        timestamp=NOW,
        source=OperatorSource(),
        durability=durability,
        idempotency_key=key,
    )
    content: str | list[ContentBlock] = [TextBlock(text=text), *images] if images else text
    return PromptInput(header=header, content=content)


def external_event(supersession_key: str | None = None) -> ExternalEventInput:
    header = InputHeader(
        id=uuid4(),
        timestamp=NOW,
        source=OperatorSource(),
        durability=Durability.DURABLE,
        supersession_key=supersession_key,
    )
    return ExternalEventInput(header=header, event_type="deploy", payload={"ref": "main"})


def retire(*, abandon_pending: bool = False, command_id: UUID | None = None) -> Retire:
    return Retire(command_id=command_id or uuid4(), abandon_pending=abandon_pending)


def reset(command_id: UUID | None = None) -> Reset:
    return Reset(command_id=command_id or uuid4())


def stop() -> Stop:
    return Stop(command_id=uuid4())


def resume() -> Resume:
    return Resume(command_id=uuid4())


def destroy() -> Destroy:
    return Destroy(command_id=uuid4())


def abandon(input_id: UUID) -> AbandonInput:
    return AbandonInput(command_id=uuid4(), input_id=input_id)


async def run_next(driver: RuntimeDriver, runtime_id: str) -> StartedRun:
    """Start the next run, execute it with the echo executor and commit its boundary."""
    started = await driver.start_run(runtime_id)
    assert started is not None, "nothing to run"
    result = await execute(started.request)
    assert await driver.finish_run(runtime_id, started.run_id, result)
    return started
