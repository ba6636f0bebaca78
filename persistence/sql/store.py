"""The runtime store on PostgreSQL (asyncpg) or SQLite (aiosqlite), SQLAlchemy 2 async Core.

One class serves both databases; their differences live in :mod:`persistence.sql.engine`
(connection set-up) and in two spots here: SQLite writers are serialised in-process, because
SQLite has one writer at a time anyway and queueing on a lock is cheaper than on the busy timeout;
and a cold load reads in REPEATABLE READ on PostgreSQL (SQLite's read transaction is already one
snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import URL, RowMapping, delete, or_, select, text, union, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence import codec
from persistence.errors import UnsafeDatabase
from persistence.plan import plan_writes
from persistence.ports import OutboxEvent, StoredRuntime
from persistence.sql.engine import WRITE_OPTION, database_url, is_sqlite, make_engine, safe_url
from persistence.sql.failures import DATABASE_ERRORS, leaves_connection_unusable, store_error
from persistence.sql.history import SqlHistoryQueries, receipt_of
from persistence.sql.tables import (
    boundary_receipts,
    event_outbox,
    inputs,
    processed_commands,
    runtimes,
    session_snapshots,
    workers,
)
from persistence.sql.writes import apply_plan
from schemas import CommandCompleted, EventEnvelope, InputPhase, RuntimePhase
from schemas.states import TERMINAL_INPUT_PHASES
from worker.core.model import BoundaryReceipt, Decision, InputRecord, RuntimeRow, SessionSnapshot

_LIVE_PHASES = [phase.value for phase in InputPhase if phase not in TERMINAL_INPUT_PHASES]
_APPLIED_PHASES = frozenset({InputPhase.APPLIED, InputPhase.APPLIED_PENDING_CONSUMPTION})
_MARK_CHUNK = 500


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SqlRuntimeStore(SqlHistoryQueries):
    """``RuntimeStore`` (and ``HistoryReader``) over a SQL database. Open it with
    :func:`open_store`."""

    def __init__(
        self, engine: AsyncEngine, url: URL, *, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self._engine = engine
        self._url = url
        self._sqlite = is_sqlite(url)
        self._write_lock = asyncio.Lock() if self._sqlite else None
        self._clock = clock
        self.writer_id: str | None = None

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return safe_url(self._url)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def __repr__(self) -> str:
        return f"SqlRuntimeStore({self.url})"

    @contextlib.asynccontextmanager
    async def _reading(self, *, consistent: bool = False) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as conn:
                try:
                    if consistent and not self._sqlite:
                        await conn.execution_options(isolation_level="REPEATABLE READ")
                    yield conn
                except DATABASE_ERRORS as exc:
                    await _discard_if_unusable(conn, exc)
                    raise
        except DATABASE_ERRORS as exc:
            raise store_error(exc) from exc

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; the body commits it with :meth:`_commit`."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            try:
                async with self._engine.connect() as conn:
                    try:
                        await conn.execution_options(**{WRITE_OPTION: True})
                        await conn.begin()
                        yield conn
                    except DATABASE_ERRORS as exc:
                        await _discard_if_unusable(conn, exc)
                        raise
            except DATABASE_ERRORS as exc:
                raise store_error(exc) from exc

    @staticmethod
    async def _commit(conn: AsyncConnection) -> None:
        try:
            await conn.commit()
        except DATABASE_ERRORS as exc:
            await _discard_if_unusable(conn, exc)
            raise store_error(exc, during_commit=True) from exc

    async def check_durability(self) -> None:
        """Refuse a PostgreSQL database where a COMMIT may return before it is durable."""
        if self._sqlite:
            return
        async with self._reading() as conn:
            setting = (await conn.execute(text("SHOW synchronous_commit"))).scalar_one()
        if str(setting).lower() == "off":
            raise UnsafeDatabase(
                f"{self.url} has synchronous_commit=off: a COMMIT may return before it is "
                "durable, and messages are acked on the strength of that COMMIT; set "
                "synchronous_commit to on (or local, remote_write, remote_apply)"
            )

    async def load_runtime(self, runtime_id: str) -> StoredRuntime:
        async with self._reading(consistent=True) as conn:
            found = (
                await conn.execute(select(runtimes).where(runtimes.c.runtime_id == runtime_id))
            ).first()
            records = await self._inputs(conn, runtime_id, live_only=True)
            named = {
                (r.last_run_id, r.boundary_sequence)
                for r in records
                if r.phase in _APPLIED_PHASES
                and r.last_run_id is not None
                and r.boundary_sequence is not None
            }
            present: set[tuple[UUID, int]] = set()
            if named:
                result = await conn.execute(
                    select(boundary_receipts.c.run_id, boundary_receipts.c.sequence).where(
                        boundary_receipts.c.runtime_id == runtime_id,
                        boundary_receipts.c.run_id.in_(sorted({run_id for run_id, _ in named})),
                    )
                )
                present = {(row.run_id, row.sequence) for row in result} & named
        row = None if found is None else _runtime_row(found._mapping)
        return StoredRuntime(row=row, inputs=tuple(records), receipts=frozenset(present))

    @staticmethod
    async def _inputs(
        conn: AsyncConnection, runtime_id: str, *, live_only: bool
    ) -> list[InputRecord]:
        query = select(inputs.c.state).where(inputs.c.runtime_id == runtime_id)
        if live_only:
            query = query.where(inputs.c.phase.in_(_LIVE_PHASES))
        result = await conn.execute(query.order_by(inputs.c.admission_seq, inputs.c.input_id))
        return [codec.decode_input(state) for state in result.scalars()]

    async def find_input(
        self, runtime_id: str, input_id: UUID, idempotency_key: str | None
    ) -> UUID | None:
        match = inputs.c.input_id == input_id
        if idempotency_key is not None:
            match = or_(match, inputs.c.idempotency_key == idempotency_key)
        async with self._reading() as conn:
            result = await conn.execute(
                select(inputs.c.input_id).where(inputs.c.runtime_id == runtime_id, match)
            )
            found: list[UUID] = list(result.scalars())
        if not found:
            return None
        return input_id if input_id in found else found[0]

    async def find_command(self, runtime_id: str, command_id: UUID) -> CommandCompleted | None:
        async with self._reading() as conn:
            outcome = (
                await conn.execute(
                    select(processed_commands.c.outcome).where(
                        processed_commands.c.runtime_id == runtime_id,
                        processed_commands.c.command_id == command_id,
                    )
                )
            ).scalar_one_or_none()
        return None if outcome is None else codec.decode_command(outcome)

    async def commit(self, decisions: Sequence[Decision]) -> None:
        if not decisions:
            return
        now = self._clock()
        plan = plan_writes(decisions)
        async with self._writing() as conn:
            await apply_plan(conn, plan, now, self.writer_id)
            await self._commit(conn)

    async def runtimes_with_pending_work(
        self, limit: int = 10_000, *, exclude_writers: Collection[str] = ()
    ) -> list[str]:
        running = select(runtimes.c.runtime_id).where(
            runtimes.c.phase == RuntimePhase.RUNNING.value
        )
        pending = (
            select(inputs.c.runtime_id)
            .join(runtimes, runtimes.c.runtime_id == inputs.c.runtime_id)
            .where(inputs.c.phase.in_(_LIVE_PHASES))
        )
        if exclude_writers:
            others = or_(
                runtimes.c.last_writer.is_(None),
                runtimes.c.last_writer.not_in(list(exclude_writers)),
            )
            running, pending = running.where(others), pending.where(others)
        ids = union(running, pending).subquery()
        async with self._reading() as conn:
            result = await conn.execute(
                select(ids.c.runtime_id).order_by(ids.c.runtime_id).limit(limit)
            )
            return list(result.scalars())

    async def load_snapshot(self, runtime_id: str) -> SessionSnapshot | None:
        async with self._reading() as conn:
            found = (
                await conn.execute(
                    select(session_snapshots).where(session_snapshots.c.runtime_id == runtime_id)
                )
            ).first()
        if found is None:
            return None
        return SessionSnapshot(
            runtime_id=found.runtime_id,
            run_id=found.run_id,
            body=dict(found.body),
            digest=found.digest,
            message_count=found.message_count,
            committed_at=found.committed_at,
        )

    async def get_input(self, runtime_id: str, input_id: UUID) -> InputRecord | None:
        async with self._reading() as conn:
            state = (
                await conn.execute(
                    select(inputs.c.state).where(
                        inputs.c.runtime_id == runtime_id, inputs.c.input_id == input_id
                    )
                )
            ).scalar_one_or_none()
        return None if state is None else codec.decode_input(state)

    async def list_inputs(self, runtime_id: str) -> list[InputRecord]:
        async with self._reading() as conn:
            return await self._inputs(conn, runtime_id, live_only=False)

    async def list_receipts(self, runtime_id: str, limit: int = 20) -> list[BoundaryReceipt]:
        table = boundary_receipts
        async with self._reading() as conn:
            result = await conn.execute(
                select(table)
                .where(table.c.runtime_id == runtime_id)
                .order_by(
                    table.c.committed_at.desc(), table.c.sequence.desc(), table.c.run_id.desc()
                )
                .limit(limit)
            )
            rows = list(result)
        return [receipt_of(row) for row in rows]

    async def list_events(self, runtime_id: str, limit: int = 20) -> list[EventEnvelope]:
        async with self._reading() as conn:
            result = await conn.execute(
                select(event_outbox.c.body)
                .where(event_outbox.c.runtime_id == runtime_id)
                .order_by(event_outbox.c.position.desc())
                .limit(limit)
            )
            return [codec.decode_event(body) for body in result.scalars()]

    async def fetch_unsent_events(self, limit: int) -> list[OutboxEvent]:
        async with self._reading() as conn:
            result = await conn.execute(
                select(event_outbox.c.position, event_outbox.c.body)
                .where(event_outbox.c.sent_at.is_(None))
                .order_by(event_outbox.c.position)
                .limit(limit)
            )
            return [OutboxEvent(row.position, codec.decode_event(row.body)) for row in result]

    async def mark_events_sent(self, positions: Sequence[int]) -> None:
        if not positions:
            return
        now = self._clock()
        async with self._writing() as conn:
            for start in range(0, len(positions), _MARK_CHUNK):
                chunk = list(positions[start : start + _MARK_CHUNK])
                await conn.execute(
                    update(event_outbox)
                    .where(event_outbox.c.position.in_(chunk), event_outbox.c.sent_at.is_(None))
                    .values(sent_at=now)
                )
            await self._commit(conn)

    async def referenced_blob_ids(self) -> set[str]:
        async with self._reading() as conn:
            result = await conn.execute(
                select(inputs.c.blob_ids).where(inputs.c.blob_ids.is_not(None))
            )
            return {blob_id for blob_ids in result.scalars() for blob_id in blob_ids}

    async def ping(self) -> None:
        async with self._reading() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._engine.dispose()

    async def heartbeat(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = ""
    ) -> list[str]:
        cutoff = now - ttl
        of_group = workers.c.group_name == group
        # SKIP LOCKED: two workers forgetting the same dead ones never wait on each other
        # (nor deadlock); what one skips, the other deletes. SQLite has one writer anyway.
        stale = select(workers.c.worker_id).where(of_group, workers.c.last_seen < cutoff)
        upsert = (sqlite_insert if self._sqlite else postgresql_insert)(workers).values(
            worker_id=worker_id, group_name=group, last_seen=now
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=[workers.c.worker_id],
            set_={"group_name": upsert.excluded.group_name,
                  "last_seen": upsert.excluded.last_seen},
        )
        async with self._writing() as conn:
            await conn.execute(
                delete(workers).where(
                    workers.c.worker_id.in_(stale.with_for_update(skip_locked=True))
                )
            )
            await conn.execute(upsert)
            result = await conn.execute(
                select(workers.c.worker_id).where(of_group, workers.c.last_seen >= cutoff)
            )
            live = sorted(result.scalars())
            await self._commit(conn)
        return live

    async def leave(self, worker_id: str) -> None:
        async with self._writing() as conn:
            await conn.execute(delete(workers).where(workers.c.worker_id == worker_id))
            await self._commit(conn)


def _runtime_row(row: RowMapping) -> RuntimeRow:
    pre_run = row["pre_run_phase"]
    return RuntimeRow(
        runtime_id=row["runtime_id"],
        phase=RuntimePhase(row["phase"]),
        pre_run_phase=None if pre_run is None else RuntimePhase(pre_run),
        current_run_id=row["current_run_id"],
        next_admission_seq=row["next_admission_seq"],
        version=row["version"],
        updated_at=row["updated_at"],
    )


async def open_store(url: str, *, create_schema: bool = False) -> SqlRuntimeStore:
    """Open a store on ``url`` (``postgresql+asyncpg://`` or ``sqlite+aiosqlite://``).

    Checks that the database answers and, on PostgreSQL, that commits are durable (raises
    :class:`UnsafeDatabase` otherwise). ``create_schema`` runs the migrations first.
    """
    parsed = database_url(url)
    engine = make_engine(parsed)
    store = SqlRuntimeStore(engine, parsed)
    try:
        await store.ping()
        await store.check_durability()
        if create_schema:
            # Imported here: the migrations import this package (engine set-up, tables).
            from persistence.migrate import upgrade_engine

            await upgrade_engine(engine)
    except BaseException:
        await engine.dispose()
        raise
    return store


async def _discard_if_unusable(conn: AsyncConnection, exc: BaseException) -> None:
    if leaves_connection_unusable(exc) and not conn.invalidated:
        with contextlib.suppress(Exception):
            await conn.invalidate()
