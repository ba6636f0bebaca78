"""The runtime store on PostgreSQL (asyncpg) or SQLite (aiosqlite), SQLAlchemy 2 async Core.

One class, :class:`SqlRuntimeStore`, serves both databases and implements every port of
:class:`persistence.ports.RuntimeStore` and :class:`persistence.ports.HistoryReader`: runtime
state, the outbox and inspection here; membership in :mod:`persistence.sql.membership`; pruning
in :mod:`persistence.sql.retention`; the history checker's reads in
:mod:`persistence.sql.history`. Rows are mapped by
:mod:`persistence.sql.rows`, and the statements of a commit are in :mod:`persistence.sql.writes`.
The differences between the databases live in :mod:`persistence.sql.engine` (connection set-up)
and :mod:`persistence.sql.connections` (SQLite writers serialised in-process; a cold load reads
in REPEATABLE READ on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import URL, ColumnElement, Text, cast, or_, select, text, union, update
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.errors import UnsafeDatabase
from persistence.migrate import check_schema, upgrade_engine
from persistence.plan import plan_writes
from persistence.ports import OutboxEvent, StoredRuntime, Writer, receipts_named_by
from persistence.sql import outbox_driver
from persistence.sql.engine import database_url, make_engine
from persistence.sql.history import SqlHistoryQueries
from persistence.sql.membership import SqlMembership
from persistence.sql.relay_lease import RelayLease
from persistence.sql.retention import SqlRetention
from persistence.sql.rows import (
    command_from_outcome,
    event_from_body,
    input_from_state,
    input_from_state_text,
    receipt_from_row,
    runtime_from_row,
    snapshot_from_row,
)
from persistence.sql.tables import (
    boundary_receipts,
    event_outbox,
    inputs,
    processed_commands,
    runtimes,
    session_snapshots,
)
from persistence.sql.writes import apply_plan
from schemas import CommandCompleted, EventEnvelope, InputPhase, RuntimePhase
from schemas.states import TERMINAL_INPUT_PHASES
from worker.core.model import BoundaryReceipt, Decision, InputRecord, SessionSnapshot

_LIVE_PHASES = [phase.value for phase in InputPhase if phase not in TERMINAL_INPUT_PHASES]
_MARK_CHUNK = 500


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SqlRuntimeStore(SqlHistoryQueries, SqlMembership, SqlRetention):
    """``RuntimeStore`` (and ``HistoryReader``) over a SQL database. Open it with
    :func:`open_store`.

    ``writer_id`` is recorded on every runtime row this store writes (see
    :attr:`persistence.ports.RuntimeStateStore.writer_id`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        url: URL,
        *,
        writer_id: str | None = None,
        writer_group: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        super().__init__(engine, url)
        self._clock = clock
        self._writer = Writer(writer_id, writer_group)
        self._relay_lease = RelayLease(engine, writer_group)

    @property
    def writer_id(self) -> str | None:
        return self._writer.id

    def __repr__(self) -> str:
        return f"SqlRuntimeStore({self.url})"

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
        return (await self.load_runtimes([runtime_id]))[runtime_id]

    async def load_runtimes(self, runtime_ids: Collection[str]) -> dict[str, StoredRuntime]:
        ids = sorted(set(runtime_ids))
        if not ids:
            return {}
        records: dict[str, list[InputRecord]] = {}
        stored: dict[str, set[tuple[UUID, int]]] = {}
        async with self._reading(consistent=True) as conn:
            result = await conn.execute(select(runtimes).where(runtimes.c.runtime_id.in_(ids)))
            found = {row.runtime_id: row._mapping for row in result}
            if found:
                # The state as text, parsed here (see ``input_from_state_text``).
                result = await conn.execute(
                    select(inputs.c.runtime_id, cast(inputs.c.state, Text).label("state"))
                    .where(inputs.c.runtime_id.in_(sorted(found)),
                           inputs.c.phase.in_(_LIVE_PHASES))
                    .order_by(inputs.c.runtime_id, inputs.c.admission_seq, inputs.c.input_id)
                )
                for runtime_id, state in result:
                    records.setdefault(runtime_id, []).append(input_from_state_text(state))
            named = {run_id for r in records.values() for run_id, _ in receipts_named_by(r)}
            if named:
                result = await conn.execute(
                    select(boundary_receipts.c.runtime_id, boundary_receipts.c.run_id,
                           boundary_receipts.c.sequence).where(
                        boundary_receipts.c.runtime_id.in_(sorted(records)),
                        boundary_receipts.c.run_id.in_(sorted(named)),
                    )
                )
                for row in result:
                    stored.setdefault(row.runtime_id, set()).add((row.run_id, row.sequence))
        loaded: dict[str, StoredRuntime] = {}
        for runtime_id in ids:
            mapping = found.get(runtime_id)
            loaded[runtime_id] = StoredRuntime.of(
                None if mapping is None else runtime_from_row(mapping),
                records.get(runtime_id, ()), stored.get(runtime_id, set()),
                None if mapping is None else mapping["last_writer"])
        return loaded

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
        return None if outcome is None else command_from_outcome(outcome)

    async def commit(self, decisions: Sequence[Decision]) -> None:
        if not decisions:
            return
        now = self._clock()
        plan = plan_writes(decisions)
        async with self._writing() as conn:
            await apply_plan(conn, plan, now, self._writer)
            await self._commit(conn)

    async def runtimes_with_pending_work(
        self, limit: int = 10_000, *, group: str | None = None,
        exclude_writers: Collection[str] = (),
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
        if group is not None:
            ours = _own_group(runtimes.c.writer_group, group)
            running, pending = running.where(ours), pending.where(ours)
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
        return None if found is None else snapshot_from_row(found._mapping)

    async def get_input(self, runtime_id: str, input_id: UUID) -> InputRecord | None:
        async with self._reading() as conn:
            state = (
                await conn.execute(
                    select(inputs.c.state).where(
                        inputs.c.runtime_id == runtime_id, inputs.c.input_id == input_id
                    )
                )
            ).scalar_one_or_none()
        return None if state is None else input_from_state(state)

    async def list_inputs(self, runtime_id: str) -> list[InputRecord]:
        query = (
            select(inputs.c.state)
            .where(inputs.c.runtime_id == runtime_id)
            .order_by(inputs.c.admission_seq, inputs.c.input_id)
        )
        async with self._reading() as conn:
            result = await conn.execute(query)
            return [input_from_state(state) for state in result.scalars()]

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
        return [receipt_from_row(row._mapping) for row in rows]

    async def list_events(self, runtime_id: str, limit: int = 20) -> list[EventEnvelope]:
        async with self._reading() as conn:
            result = await conn.execute(
                select(event_outbox.c.body)
                .where(event_outbox.c.runtime_id == runtime_id)
                .order_by(event_outbox.c.position.desc())
                .limit(limit)
            )
            return [event_from_body(body) for body in result.scalars()]

    async def fetch_unsent_events(self, limit: int) -> list[OutboxEvent]:
        if not self._sqlite:
            async with self._reading() as conn:
                return await outbox_driver.fetch_unsent(conn, self._writer.group, limit)
        async with self._reading() as conn:
            # The body as text, published as stored; what the AMQP properties need comes from
            # the row's columns and the body's ``at``, without parsing the whole body.
            t = event_outbox.c
            result = await conn.execute(
                select(t.position, t.event_id, t.runtime_id, t.code,
                       t.body["at"].as_string().label("at"), cast(t.body, Text).label("text"),
                       t.traceparent)
                .where(t.sent_at.is_(None), _own_group(t.writer_group, self._writer.group))
                .order_by(t.position)
                .limit(limit)
            )
            return [OutboxEvent(row.position, row.event_id, row.runtime_id, row.code,
                                datetime.fromisoformat(row.at), row.text.encode(),
                                row.traceparent)
                    for row in result]

    async def mark_events_sent(self, positions: Sequence[int]) -> None:
        if not positions:
            return
        now = self._clock()
        if not self._sqlite:  # one statement, atomic as it runs
            async with self._reading() as conn:
                await outbox_driver.mark_sent(conn, positions, now)
            return
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

    async def lead_relay(self) -> bool:
        return await self._relay_lease.hold()

    async def release_relay(self) -> None:
        await self._relay_lease.release()

    async def close(self) -> None:
        await self._relay_lease.release()
        await self._engine.dispose()


def _own_group(column: ColumnElement[str | None], group: str | None) -> ColumnElement[bool]:
    """Rows of ``group``, and rows written without one (before groups were recorded)."""
    if group is None:
        return column.is_(None)
    return or_(column.is_(None), column == group)


async def open_store(
    url: str, *, writer_id: str | None = None, writer_group: str | None = None,
    create_schema: bool = False, require_schema: bool = False, existing: bool = False,
) -> SqlRuntimeStore:
    """Open a store on ``url`` (``postgresql+asyncpg://`` or ``sqlite+aiosqlite://``) that
    records ``writer_id`` and ``writer_group`` on the runtime rows it writes.

    Checks that the database answers and, on PostgreSQL, that commits are durable (raises
    :class:`UnsafeDatabase` otherwise). ``create_schema`` runs the migrations first;
    ``require_schema`` raises :class:`~persistence.errors.SchemaMismatch` unless the schema is
    at head; ``existing`` refuses to make a SQLite file (``DatabaseMissing``).
    """
    parsed = database_url(url)
    engine = make_engine(parsed, existing=existing)
    store = SqlRuntimeStore(engine, parsed, writer_id=writer_id, writer_group=writer_group)
    try:
        await store.ping()
        await store.check_durability()
        if create_schema:
            await upgrade_engine(engine)
        if require_schema:
            await check_schema(engine)
    except BaseException:
        await engine.dispose()
        raise
    return store
