"""Schema migrations (Alembic), run from code: no ``alembic.ini`` is needed.

Several workers may start at once against one PostgreSQL database; a transaction-scoped advisory
lock makes the second wait for the first and then find the schema at head. On SQLite the
migration transaction begins IMMEDIATE, which serialises migrators the same way.

An upgrade reports what it did (:class:`Migration`): the revision found, the revision left and
the revisions applied in between, read inside the migrating transaction, so that a migrator
that waited for another one reports nothing applied.

Code and schema must agree before anything reads or writes: :func:`check_schema` compares the
revision recorded in the database (``alembic_version``) with the head of the packaged
migrations and raises :class:`~persistence.errors.SchemaMismatch` when the schema is absent or
behind (migrating fixes it) or at a revision this code does not know (a newer version migrated
it; upgrading refuses that too, rather than fail inside Alembic).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.errors import SchemaMismatch
from persistence.sql.engine import WRITE_OPTION, database_url, make_engine
from persistence.sql.failures import DATABASE_ERRORS, store_error

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

_ADVISORY_LOCK_KEY = 0x6D65_6572_6B61_74  # "meerkat"


@dataclass(frozen=True)
class Migration:
    """What one upgrade did."""

    before: str | None
    """The schema revision found (``None``: no schema yet)."""
    after: str | None
    """The schema revision left: head (``None`` only for a store without a schema)."""
    applied: tuple[str, ...]
    """The revisions applied, oldest first; empty when the schema was already at head."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration pointing at the packaged migrations.

    With ``connection`` the migrations run on it, inside its transaction.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_connection(connection: Connection) -> Migration:
    """Upgrade to head on ``connection``; the caller commits."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    _refuse_unknown_revisions(connection)
    config = alembic_config(connection)
    before = _revision(connection)
    command.upgrade(config, "head")
    after = _revision(connection)
    return Migration(before, after, applied_between(config, before, after))


def applied_between(config: Config, before: str | None, after: str | None) -> tuple[str, ...]:
    """The revisions after ``before`` up to and including ``after``, oldest first."""
    if after is None or after == before:
        return ()
    script = ScriptDirectory.from_config(config)
    newest_first = script.iterate_revisions(after, before or "base")
    return tuple(reversed([revision.revision for revision in newest_first]))


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _revisions(connection: Connection) -> tuple[set[str], set[str], set[str]]:
    """The database's revisions, the head revisions and every revision of the migrations."""
    script = ScriptDirectory.from_config(alembic_config())
    current = set(MigrationContext.configure(connection).get_current_heads())
    return current, set(script.get_heads()), {r.revision for r in script.walk_revisions()}


def _refuse_unknown_revisions(connection: Connection) -> None:
    current, heads, known = _revisions(connection)
    unknown = current - known
    if unknown:
        raise SchemaMismatch(
            f"the database schema is at revision {', '.join(sorted(unknown))}, which this "
            f"version does not know (its latest is {', '.join(sorted(heads))}): a newer "
            "version migrated it",
            behind=False,
        )


def _check_connection(connection: Connection) -> None:
    _refuse_unknown_revisions(connection)
    current, heads, _ = _revisions(connection)
    if current != heads:
        found = ", ".join(sorted(current)) or "none"
        raise SchemaMismatch(
            f"the database schema is not migrated (revision {found}, this version needs "
            f"{', '.join(sorted(heads))})",
            behind=True,
        )


async def check_schema(engine: AsyncEngine) -> None:
    """Raise :class:`~persistence.errors.SchemaMismatch` unless the database behind
    ``engine`` is at the head revision."""
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_check_connection)
    except DATABASE_ERRORS as exc:
        raise store_error(exc) from exc


async def upgrade_engine(engine: AsyncEngine) -> Migration:
    """Upgrade the database behind ``engine`` to head (idempotent)."""
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{WRITE_OPTION: True})
            await conn.begin()
            migration = await conn.run_sync(upgrade_connection)
            await conn.commit()
            return migration
    except DATABASE_ERRORS as exc:
        raise store_error(exc) from exc


async def upgrade_async(url: str) -> Migration:
    """Upgrade the database at ``url`` to the latest schema (idempotent).

    A ``memory://`` store has no schema; upgrading it does nothing.
    """
    if url.startswith("memory://"):
        return Migration(None, None, ())
    engine = make_engine(database_url(url), purpose="migrate")
    try:
        return await upgrade_engine(engine)
    finally:
        await engine.dispose()


def upgrade(database_url: str) -> Migration:
    """Synchronous entry point of :func:`upgrade_async`; call it outside any event loop."""
    return asyncio.run(upgrade_async(database_url))
