"""Turning database exceptions into the typed store errors.

A lost connection, a timeout or a transient server condition (serialization failure, deadlock,
lock timeout, shutdown) becomes :class:`StoreUnavailable`, so the message is retried later. The
same failure while COMMIT is in flight becomes :class:`CommitOutcomeUnknown`: the server may
have made the transaction durable before the connection died. A constraint a commit's rows
violate becomes the typed error of that constraint (:func:`integrity_failure`), whether the
statement went through SQLAlchemy or straight to asyncpg.
"""

from __future__ import annotations

import re
import sqlite3

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from persistence.errors import (
    CommitOutcomeUnknown,
    DatabaseMissing,
    DuplicateRow,
    ReceiptConflict,
    StoreError,
    StoreUnavailable,
)
from persistence.sql.tables import metadata

_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
"""Connection exception, transaction rollback, insufficient resources, operator intervention
(includes statement timeout and shutdown), system error."""

_TRANSIENT_SQLSTATES = frozenset({"55P03", "55006"})  # lock not available, object in use
_NO_SUCH_DATABASE = "3D000"  # invalid catalog name: the URL names no database of the server

FOREIGN_KEY = "foreign key"


def _sqlstate(exc: BaseException) -> str | None:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlstate", None)
    return code if isinstance(code, str) else None


_SQLITE_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open", "readonly", "full")
"""SQLite reports both an unreachable file and a bad statement as OperationalError; only these
messages mean "try again later"."""


def is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError) and isinstance(exc.orig, sqlite3.Error):
        message = str(exc.orig).lower()
        return any(marker in message for marker in _SQLITE_TRANSIENT)
    if isinstance(
        exc,
        OperationalError
        | InterfaceError
        | DisconnectionError
        | PoolTimeout
        | OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError,
    ):
        return True
    code = _sqlstate(exc)
    return code is not None and code.startswith("08")


def leaves_connection_unusable(exc: BaseException) -> bool:
    """Whether the pooled connection must be thrown away after ``exc``. Besides a lost
    connection, asyncpg can be left mid-operation by a server that terminated it ("cannot
    switch to state ...; another operation is in progress"); SQLAlchemy does not see that as a
    disconnect, so such a connection would go back to the pool and fail every later use."""
    if is_connection_failure(exc):
        return True
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(orig, asyncpg.InternalClientError)


def is_transient_condition(exc: BaseException) -> bool:
    """A database failure worth retrying: the typed error gets ``transient`` from this; whether
    to retry is decided by the worker's policy on that flag."""
    if is_connection_failure(exc):
        return True
    code = _sqlstate(exc)
    return code is not None and (
        code.startswith(_TRANSIENT_SQLSTATE_CLASSES) or code in _TRANSIENT_SQLSTATES
    )


def describe(exc: BaseException) -> str:
    """A short description: the driver's message, without the statement and its parameters."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return f"{type(orig).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else ""


def store_error(exc: BaseException, *, during_commit: bool = False) -> StoreError:
    """The typed error for a database failure (integrity errors are mapped by the caller)."""
    if during_commit and is_connection_failure(exc):
        return CommitOutcomeUnknown(f"connection lost during COMMIT: {describe(exc)}")
    if _sqlstate(exc) == _NO_SUCH_DATABASE:
        return DatabaseMissing("postgresql_database",
                               f"{_first_line(exc)} on the PostgreSQL server")
    if is_transient_condition(exc):
        return StoreUnavailable(f"database unavailable: {describe(exc)}")
    return StoreError(f"database error: {describe(exc)}")


DATABASE_ERRORS = (SQLAlchemyError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
"""Exceptions a database call may raise that :func:`store_error` translates."""


_SQLITE_COLUMNS = re.compile(r"constraint failed: (.+)$")


def violated_constraint(exc: IntegrityError | asyncpg.IntegrityConstraintViolationError,
                        ) -> str | None:
    """Name of the constraint an integrity error reports, on PostgreSQL and on SQLite.

    SQLite names CHECK constraints but reports UNIQUE and PRIMARY KEY ones by their columns, and
    foreign keys not at all; those are found by columns in the schema, or reported as
    :data:`FOREIGN_KEY`.
    """
    if not isinstance(exc, IntegrityError):
        found = getattr(exc, "constraint_name", None)
        return found if isinstance(found, str) else None
    name = getattr(exc.orig.__cause__, "constraint_name", None) if exc.orig else None
    if isinstance(name, str):
        return name
    message = str(exc.orig)
    if "FOREIGN KEY constraint failed" in message:
        return FOREIGN_KEY
    found = _SQLITE_COLUMNS.search(message.splitlines()[0] if message else "")
    if found is None:
        return None
    detail = found.group(1).strip()
    if "." not in detail:
        return detail
    return _constraint_by_columns(detail)


def _constraint_by_columns(detail: str) -> str | None:
    qualified = [part.strip().split(".", 1) for part in detail.split(",")]
    table = metadata.tables.get(qualified[0][0])
    if table is None:
        return None
    columns = {column for _, column in qualified}
    for constraint in table.constraints:
        if isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint) and (
            {c.name for c in constraint.columns} == columns
        ):
            return str(constraint.name)
    return None


def is_foreign_key(constraint: str | None) -> bool:
    return constraint == FOREIGN_KEY or (constraint or "").startswith("fk_")


_DUPLICATES = {
    "pk_inputs": "input id",
    "uq_inputs_runtime_id_idempotency_key": "idempotency key",
    "pk_processed_commands": "command id",
    "uq_event_outbox_event_id": "event id",
}


def integrity_failure(exc: IntegrityError | asyncpg.IntegrityConstraintViolationError,
                      ) -> StoreError:
    """The typed error for a constraint the multi-row statements of a commit violated.

    The runtime rows' own conflicts are caught where they are written, as version conflicts.
    """
    constraint = violated_constraint(exc)
    if constraint == "pk_boundary_receipts":
        return ReceiptConflict(describe(exc))
    if constraint in _DUPLICATES:
        return DuplicateRow(_DUPLICATES[constraint])
    if is_foreign_key(constraint):
        return StoreError(f"{describe(exc)} (a row refers to a runtime that is not stored)")
    return StoreError(f"refused by the database: {describe(exc)}")
