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

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from persistence.blobs import FileBlobStore, MemoryBlobStore
from persistence.errors import StoreError
from persistence.ports import BlobStore, RuntimeStore
from schemas import (
    DEFAULT_LIMITS,
    AbandonInput,
    AnyCommand,
    AnyInput,
    Destroy,
    Durability,
    EventCode,
    ExternalEventInput,
    InputHeader,
    InputPhase,
    OperatorSource,
    Outcome,
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
from worker.broker import BrokerLink
from worker.driver import RuntimeDriver
from worker.ids import uuid7
from worker.pipeline.authz import Access
from worker.pipeline.committer import Committer
from worker.pipeline.settle import step_result
from worker.pipeline.steps import RunStep, Staged, StepKind
from worker.runs.executors import Executor, RunRequest, RunResult
from worker.runs.executors.echo import execute
from worker.runs.loop import RunLoop
from worker.runs.restore import Restorer
from worker.topology import Topology

BLOB_STORE_KINDS = [
    pytest.param("memory", marks=pytest.mark.unit),
    pytest.param("filesystem", marks=pytest.mark.unit),
    pytest.param("s3", marks=pytest.mark.integration),
]


@dataclass(frozen=True)
class StartedRun:
    run_id: UUID
    request: RunRequest


@dataclass
class Harness:
    """One worker process on shared stores; ``store``/``blobs`` are its faulty views of them."""

    inner_store: RuntimeStore
    inner_blobs: BlobStore
    journal: list[str] = field(default_factory=list)
    destroy_unknown_runtimes: bool = False
    store: FaultyStore = field(init=False)
    blobs: FaultyBlobStore = field(init=False)
    driver: RuntimeDriver = field(init=False)

    def __post_init__(self) -> None:
        self.store = FaultyStore(self.inner_store, journal=self.journal)
        self.blobs = FaultyBlobStore(self.inner_blobs, journal=self.journal)
        self.driver = RuntimeDriver(self.store, self.blobs,
                                    destroy_unknown_runtimes=self.destroy_unknown_runtimes)

    @property
    def restorer(self) -> Restorer:
        return Restorer(self.blobs, self.driver.session)

    # One decision per transaction, as a lone message or run step would be committed.

    async def accept_input(
        self, runtime_id: str, item: AnyInput, *, message_bytes: int | None = None
    ) -> Outcome:
        async with self.driver.transaction() as transaction:
            decision = await transaction.accept_input(runtime_id, item, message_bytes=message_bytes)
            await transaction.commit()
        assert decision.outcome is not None
        return decision.outcome

    async def apply_command(self, runtime_id: str, command: AnyCommand) -> Outcome:
        async with self.driver.transaction() as transaction:
            decision = await transaction.apply_command(runtime_id, command)
            await transaction.commit()
        assert decision.outcome is not None
        return decision.outcome

    async def start_run(self, runtime_id: str) -> StartedRun | None:
        """Stage the next batch, commit it, and restore what the executor gets (as the run loop
        does); None when nothing runs or the run failed on a missing or corrupt blob."""
        run_id = uuid7()
        async with self.driver.transaction() as transaction:
            decision = await transaction.stage_run(runtime_id, run_id)
            if decision is None:
                return None
            await transaction.commit()
        staged = step_result(RunStep(StepKind.STAGE, runtime_id, run_id), decision)
        assert isinstance(staged, Staged)
        try:
            request = await self.restorer.request(runtime_id, run_id, list(staged.payloads))
        except StoreError as exc:
            try:
                if exc.transient:
                    raise
                await self.fail_run(runtime_id, run_id, f"{type(exc).__name__}: {exc}")
            finally:
                self.driver.forget_run(runtime_id, run_id)
            return None
        return StartedRun(run_id, request)

    async def finish_run(self, runtime_id: str, run_id: UUID, result: RunResult) -> bool:
        async with self.driver.transaction() as transaction:
            decision = await transaction.finish_run(runtime_id, run_id, result)
            await transaction.commit()
        return decision is not None

    async def fail_run(self, runtime_id: str, run_id: UUID, error: str) -> bool:
        async with self.driver.transaction() as transaction:
            decision = await transaction.fail_run(runtime_id, run_id, error)
            await transaction.commit()
        return decision is not None

    @asynccontextmanager
    async def running(self, executor: Executor) -> AsyncIterator[RunLoop]:
        """A run loop whose steps this harness's committer commits (it has no broker link: only
        run steps go through it)."""
        unused = BrokerLink("amqp://guest:guest@127.0.0.1:1/", Topology())
        topology = Topology()
        access = Access(topology.ingress_exchange, topology.commands_exchange)
        committer = Committer(self.driver, unused, limits=DEFAULT_LIMITS, access=access,
                              delivery_limit=5)
        loop = RunLoop(self.driver, executor, submit=committer.submit_step, restorer=self.restorer)
        task = asyncio.get_running_loop().create_task(committer.run())
        try:
            yield loop
        finally:
            await loop.stop(1.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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


async def run_next(harness: Harness, runtime_id: str) -> StartedRun:
    """Start the next run, execute it with the echo executor and commit its boundary."""
    started = await harness.start_run(runtime_id)
    assert started is not None, "nothing to run"
    result = await execute(started.request)
    assert await harness.finish_run(runtime_id, started.run_id, result)
    return started
