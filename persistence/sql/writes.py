"""The statements of one commit: the rows of its folded plan (:mod:`persistence.plan`), then
its events, each mapped by :mod:`persistence.sql.rows`.

:func:`apply_plan` is the one place that decides how a commit reaches the database: on
PostgreSQL straight through asyncpg, one statement per table whatever the number of rows
(:mod:`persistence.sql.driver_writes`); elsewhere (SQLite) through SQLAlchemy, here, with a
statement per runtime row and input update and multi-row inserts for the rest. Both run inside
the caller's transaction and make the same checks; the first failure raises a typed error and
the caller rolls the whole transaction back.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table, and_, bindparam, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Update

from persistence.errors import DuplicateRow, StoreError, VersionConflict
from persistence.plan import InputWrite, WritePlan
from persistence.ports import ANONYMOUS, Writer
from persistence.sql.driver_writes import apply_through_driver
from persistence.sql.failures import integrity_failure
from persistence.sql.rows import (
    command_to_row,
    event_to_row,
    input_to_row,
    receipt_to_row,
    runtime_to_row,
    snapshot_to_row,
)
from persistence.sql.tables import (
    boundary_receipts,
    event_outbox,
    inputs,
    processed_commands,
    runtimes,
    session_snapshots,
)
from worker.core.model import InputRecord, RuntimeRow, SessionSnapshot


async def apply_plan(
    conn: AsyncConnection, plan: WritePlan, now: datetime, writer: Writer = ANONYMOUS
) -> None:
    """Write a folded commit, by the way of ``conn``'s database."""
    if conn.dialect.name == "postgresql":
        await apply_through_driver(conn, plan, now, writer)
    else:
        await _apply_through_sqlalchemy(conn, plan, now, writer)


async def _apply_through_sqlalchemy(
    conn: AsyncConnection, plan: WritePlan, now: datetime, writer: Writer
) -> None:
    try:
        for row, expected in plan.runtimes.values():
            await _put_runtime(conn, row, expected, writer)
        for runtime_id, input_id in plan.deletes:
            await conn.execute(
                delete(inputs).where(
                    and_(inputs.c.runtime_id == runtime_id, inputs.c.input_id == input_id)
                )
            )
        for write in plan.updates:
            await _update_input(conn, write.runtime_id, write.record)
        if plan.inserts:
            await _insert_inputs(conn, plan.inserts)
        if plan.receipts:
            await conn.execute(
                insert(boundary_receipts), [receipt_to_row(r) for r in plan.receipts]
            )
        if plan.snapshots:
            await _upsert_snapshots(conn, list(plan.snapshots.values()))
        if plan.commands:
            await conn.execute(
                insert(processed_commands),
                [command_to_row(runtime_id, command) for runtime_id, command in plan.commands],
            )
        if plan.events:
            traces, group = plan.traces, writer.group
            await conn.execute(insert(event_outbox), [
                event_to_row(e, now, traces.get(e.event_id) if traces else None, group)
                for e in plan.events
            ])
    except IntegrityError as exc:
        raise integrity_failure(exc) from exc


async def _insert_inputs(conn: AsyncConnection, writes: list[InputWrite]) -> None:
    # The id conflict is named as the arbiter, so an input repeated whole (same id and same key)
    # is reported as a repeated id on both databases, whichever index each checks first.
    statement = (
        _dialect_insert(conn, inputs)
        .on_conflict_do_nothing(index_elements=["runtime_id", "input_id"])
        .returning(inputs.c.runtime_id, inputs.c.input_id)
    )
    result = await conn.execute(statement, [input_to_row(w.runtime_id, w.record) for w in writes])
    written = {(row.runtime_id, row.input_id) for row in result}
    for write in writes:
        record = write.record
        if (write.runtime_id, record.input_id) not in written:
            detail = f"input {record.input_id} key {record.idempotency_key!r}"
            raise DuplicateRow("input id", detail)


def _update_statement(table: Table, keys: tuple[str, ...], fenced: tuple[str, ...]) -> Update:
    """``UPDATE table SET <every other column> WHERE <keys and fenced> = :k_<name>``, built once:
    a statement object reused with new parameters skips building and keying it anew."""
    where = and_(*(table.c[name] == bindparam(f"k_{name}") for name in (*keys, *fenced)))
    columns = [c.name for c in table.columns if c.name not in keys]
    return update(table).where(where).values({name: bindparam(name) for name in columns})


_RUNTIME_UPDATE = _update_statement(runtimes, ("runtime_id",), ("version",))
_INPUT_UPDATE = _update_statement(inputs, ("runtime_id", "input_id"), ())
_RUNTIME_INSERT = insert(runtimes)


async def _put_runtime(
    conn: AsyncConnection, row: RuntimeRow, expected: int, writer: Writer
) -> None:
    values = runtime_to_row(row, writer=writer.id, group=writer.group)
    if expected == 0:
        try:
            await conn.execute(_RUNTIME_INSERT, values)
        except IntegrityError as exc:  # another writer created it first
            raise VersionConflict(row.runtime_id, expected) from exc
        return
    values["k_runtime_id"] = values.pop("runtime_id")
    values["k_version"] = expected
    result = await conn.execute(_RUNTIME_UPDATE, values)
    if result.rowcount == 0:
        raise VersionConflict(row.runtime_id, expected)


async def _update_input(conn: AsyncConnection, runtime_id: str, record: InputRecord) -> None:
    values = input_to_row(runtime_id, record)
    values["k_runtime_id"] = values.pop("runtime_id")
    values["k_input_id"] = values.pop("input_id")
    result = await conn.execute(_INPUT_UPDATE, values)
    if result.rowcount == 0:
        raise StoreError(f"runtime {runtime_id!r}: input {record.input_id} is not stored")


async def _upsert_snapshots(conn: AsyncConnection, snapshots: list[SessionSnapshot]) -> None:
    statement = _dialect_insert(conn, session_snapshots)
    changed = {c.name: statement.excluded[c.name] for c in session_snapshots.columns
                if c.name != "runtime_id"}
    await conn.execute(
        statement.on_conflict_do_update(index_elements=["runtime_id"], set_=changed),
        [snapshot_to_row(s) for s in snapshots],
    )


def _dialect_insert(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
