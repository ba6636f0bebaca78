"""The SQL stores' schema and set-up, on SQLite and PostgreSQL: migrations, CHECK constraints
against the enums, durability settings, and failures turned into typed errors."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, insert, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import await_only

from persistence.errors import (
    CommitOutcomeUnknown,
    StoreError,
    StoreUnavailable,
    UnsafeDatabase,
)
from persistence.factory import open_runtime_store
from persistence.memory import MemoryRuntimeStore
from persistence.migrate import alembic_config, upgrade, upgrade_async
from persistence.sql.engine import database_url, make_engine
from persistence.sql.store import SqlRuntimeStore, open_store
from persistence.sql.tables import (
    CHECKED_ENUMS,
    KEY_LENGTH,
    TERMINAL_PHASES,
    enum_values,
    inputs,
    metadata,
    runtimes,
)
from schemas import InputPhase
from tests.contract.runtime_builders import created, record, row, step
from worker.core.model import PutInput

NOW = datetime(2026, 3, 14, tzinfo=UTC)


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.unit),
        pytest.param("postgres", marks=pytest.mark.integration),
    ],
)
def empty_database_url(request: pytest.FixtureRequest) -> str:
    """A database of this test's own with no schema yet."""
    url: str = request.getfixturevalue(
        "sqlite_url" if request.param == "sqlite" else "fresh_postgres_url"
    )
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def migrated(empty_database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_async(empty_database_url)
    engine = make_engine(database_url(empty_database_url))
    try:
        yield engine
    finally:
        await engine.dispose()


def _schema_diff(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


def _revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


async def test_migrations_build_exactly_the_declared_schema(empty_database_url: str) -> None:
    await upgrade_async(empty_database_url)
    await upgrade_async(empty_database_url)  # a second run finds the schema at head
    engine = make_engine(database_url(empty_database_url))
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_schema_diff) == []
            head = ScriptDirectory.from_config(alembic_config()).get_current_head()
            assert await conn.run_sync(_revision) == head
    finally:
        await engine.dispose()


def _row_for(table: str, column: str, value: str, runtime_id: str) -> dict[str, Any]:
    values: dict[str, Any]
    if table == "runtimes":
        values = {
            "runtime_id": runtime_id,
            "phase": "idle",
            "pre_run_phase": None,
            "next_admission_seq": 1,
            "version": 1,
            "updated_at": NOW,
        }
    else:
        values = {
            "runtime_id": runtime_id,
            "input_id": uuid4(),
            "phase": "queued",
            "lane": "queue",
            "admission_seq": 1,
            "kind": "prompt",
            "durability": "durable",
            "state": {},
            "created_at": NOW,
            "updated_at": NOW,
        }
    return {**values, column: value}


async def _admits(engine: AsyncEngine, table: str, column: str, value: str) -> bool:
    """Whether a row with ``value`` in ``column`` can be inserted (nothing is kept)."""
    runtime_id = f"rt:check:{uuid4()}"
    async with engine.connect() as conn:
        try:
            if table != "runtimes":
                parent = _row_for("runtimes", "phase", "idle", runtime_id)
                await conn.execute(insert(runtimes), parent)
            target = runtimes if table == "runtimes" else inputs
            await conn.execute(insert(target), _row_for(table, column, value, runtime_id))
        except IntegrityError:
            return False
        finally:
            await conn.rollback()
    return True


async def _declared_values(conn: AsyncConnection, table: str, column: str) -> set[str]:
    name = f"ck_{table}_{column}"
    if conn.dialect.name == "postgresql":
        definition = (
            await conn.execute(
                text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :n"),
                {"n": name},
            )
        ).scalar_one()
    else:
        table_sql = (
            await conn.execute(
                text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"),
                {"t": table},
            )
        ).scalar_one()
        found = re.search(rf"CONSTRAINT {name} CHECK \(([^)]*)\)", table_sql)
        assert found is not None, f"{name} missing"
        definition = found.group(1)
    return set(re.findall(r"'([^']*)'", definition))


async def test_check_constraints_admit_exactly_the_enum_values(migrated: AsyncEngine) -> None:
    for (table, column), enum in CHECKED_ENUMS.items():
        async with migrated.connect() as conn:
            assert await _declared_values(conn, table, column) == set(enum_values(enum))
        for value in enum_values(enum):
            assert await _admits(migrated, table, column, value), (table, column, value)
        assert not await _admits(migrated, table, column, "bogus"), (table, column)


@pytest.mark.unit
async def test_sqlite_connections_are_durable_and_checked(sqlite_url: str) -> None:
    store = await open_store(sqlite_url, create_schema=True)
    try:
        async with store.engine.connect() as conn:
            pragmas = {
                name: (await conn.execute(text(f"PRAGMA {name}"))).scalar_one()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragmas == {
            "journal_mode": "wal",
            "synchronous": 2,
            "foreign_keys": 1,
            "busy_timeout": 5000,
        }
    finally:
        await store.close()


@pytest.mark.unit
def test_the_synchronous_upgrade_is_idempotent(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    upgrade(sqlite_url)
    upgrade("memory://")


@pytest.mark.unit
async def test_the_factory_picks_the_store_by_url(sqlite_url: str) -> None:
    assert isinstance(await open_runtime_store("memory://"), MemoryRuntimeStore)
    store = await open_runtime_store(sqlite_url.replace("+aiosqlite", ""), create_schema=True)
    try:
        assert isinstance(store, SqlRuntimeStore)
        await created(store)
    finally:
        await store.close()


@pytest.mark.unit
async def test_an_unsupported_url_is_refused_without_its_password() -> None:
    for url in ("mysql://meerkat:hunter2-secret@db/x", "not a url hunter2-secret"):
        with pytest.raises(ValueError, match="URL") as caught:
            await open_runtime_store(url)
        assert "hunter2-secret" not in str(caught.value)


@pytest.mark.unit
async def test_a_sqlite_file_in_an_unusable_folder_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable):
        await open_runtime_store(f"sqlite+aiosqlite:///{blocker / 'runtime.db'}")


@pytest.mark.integration
async def test_an_unreachable_database_is_unavailable_without_its_password() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await open_runtime_store("postgres://meerkat:hunter2-secret@127.0.0.1:1/meerkat")
    assert "hunter2-secret" not in str(caught.value)


@pytest.mark.integration
async def test_postgres_without_synchronous_commit_is_refused(fresh_postgres_url: str) -> None:
    name = database_url(fresh_postgres_url).database
    await upgrade_async(fresh_postgres_url)
    admin = make_engine(database_url(fresh_postgres_url))
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
            await conn.commit()
    finally:
        await admin.dispose()
    with pytest.raises(UnsafeDatabase, match="synchronous_commit"):
        await open_runtime_store(fresh_postgres_url)


@pytest.mark.integration
@pytest.mark.faults
async def test_a_connection_lost_during_commit_leaves_the_outcome_unknown(
    postgres_url: str,
) -> None:
    store = await open_store(postgres_url)
    killer = make_engine(database_url(postgres_url))

    def cut_connection(conn: Connection) -> None:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()

        async def terminate() -> None:
            async with killer.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        await_only(terminate())

    try:
        runtime_id = await created(store)
        event.listen(store.engine.sync_engine, "commit", cut_connection)
        with pytest.raises(CommitOutcomeUnknown):
            await store.commit([step(runtime_id, 2)])
        event.remove(store.engine.sync_engine, "commit", cut_connection)
        # The server never saw the COMMIT, and the store recovers on a fresh connection.
        assert (await store.load_runtime(runtime_id)).row == row(runtime_id, 1)
        await store.commit([step(runtime_id, 2)])
    finally:
        await killer.dispose()
        await store.close()


@pytest.mark.integration
async def test_postgres_refuses_a_value_too_long_for_its_column(postgres_url: str) -> None:
    """(Not cut short: the commit's rows travel as arrays, and only the assignment into the
    column may check the length.)"""
    store = await open_store(postgres_url)
    try:
        runtime_id = await created(store)
        # (The wire schema bounds the key too; the store must not rely on it.)
        too_long = dataclasses.replace(record(1), idempotency_key="k" * (KEY_LENGTH + 1))
        with pytest.raises(StoreError, match="too long"):
            await store.commit([step(runtime_id, 2, PutInput(too_long, insert=True))])
        assert (await store.load_runtime(runtime_id)).row == row(runtime_id, 1)
        assert await store.list_inputs(runtime_id) == []
    finally:
        await store.close()


@pytest.mark.integration
@pytest.mark.faults
async def test_the_store_reconnects_after_its_connections_were_killed(postgres_url: str) -> None:
    store = await open_store(postgres_url)
    killer = make_engine(database_url(postgres_url))
    try:
        runtime_id = await created(store)
        async with killer.connect() as other:
            await other.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert (await store.load_runtime(runtime_id)).row == row(runtime_id, 1)
    finally:
        await killer.dispose()
        await store.close()


async def test_the_pruners_partial_index_covers_exactly_the_terminal_phases(
    migrated: AsyncEngine,
) -> None:
    """The migration spells the terminal phases out; they must be the enum's (and the order
    the pruner's query uses, for PostgreSQL to match the query with the index)."""
    async with migrated.connect() as conn:
        if conn.dialect.name == "postgresql":
            query = "SELECT indexdef FROM pg_indexes WHERE indexname = :n"
        else:
            query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"
        definition = (
            await conn.execute(text(query), {"n": "ix_inputs_terminal_updated_at"})
        ).scalar_one()
    assert re.findall(r"'([^']*)'", definition) == TERMINAL_PHASES
    assert sorted(p.value for p in InputPhase if p.is_terminal) == TERMINAL_PHASES
