"""Database URLs and engines: the one place where PostgreSQL and SQLite set-up differs.

PostgreSQL connections carry short statement and lock timeouts so that a stuck database turns
into a retryable error instead of a hung consumer. SQLite connections are made durable and
concurrent (WAL, ``synchronous=FULL``, a busy timeout, foreign keys on), and SQLAlchemy emits
BEGIN itself because the sqlite3 driver's own transaction handling skips BEGIN before SELECT,
which would split a multi-statement read across snapshots.

A SQLite file is made on first use, but never its folder: a path into a folder that does not
exist is a mistake in the URL far more often than a wish, so it is refused
(:class:`~persistence.errors.DatabaseMissing`). A command that only reads asks for an
``existing`` database and is refused the file too, rather than reading an empty one it made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from sqlalchemy import URL, Connection, event, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from persistence.codec import dumps
from persistence.errors import DatabaseMissing

POSTGRES_DRIVER = "postgresql+asyncpg"
SQLITE_DRIVER = "sqlite+aiosqlite"
_POSTGRES_ALIASES = {"postgres", "postgresql", POSTGRES_DRIVER}
_SQLITE_ALIASES = {"sqlite", SQLITE_DRIVER}

CONNECT_TIMEOUT_S = 5.0
POOL_SIZE = 20
POOL_OVERFLOW = 0
"""A worker's PostgreSQL connections: 20, kept open (four replicas stay under PostgreSQL's
default ``max_connections`` of 100). A connection past the kept ones would be closed when
returned, and opening one costs a server process, a handshake and asyncpg's type introspection
for each statement it prepares. With SQLAlchemy's default 5 kept, a worker answering requests at
120/s opened and closed connections all the time (runs read snapshots beside the commits, the
relay and the loads), and its accept latency p50 was 290 ms instead of 67 ms; with 16 kept and
4 more at a burst, the four were still opened and closed under a paced load. A burst beyond the
20 waits for one of them (SQLAlchemy's pool timeout) rather than opening more."""
SQLITE_BUSY_TIMEOUT_MS = 5000

Purpose = Literal["store", "migrate"]

_PG_COMMAND_TIMEOUT_S: dict[Purpose, float] = {"store": 30.0, "migrate": 600.0}
"""Client-side bound on one statement: covers a network that silently stops answering."""

_PG_TIMEOUTS: dict[Purpose, dict[str, str]] = {
    "store": {
        "statement_timeout": "15s",
        "lock_timeout": "5s",
        "idle_in_transaction_session_timeout": "60s",
    },
    # Schema changes may wait for another process's migration to finish.
    "migrate": {"statement_timeout": "5min", "lock_timeout": "2min"},
}

WRITE_OPTION = "meerkat_write"
"""Execution option marking a write transaction: on SQLite it begins IMMEDIATE, taking the
write lock up front, so two writers queue on the busy timeout instead of one failing on upgrade."""


def database_url(url: str) -> URL:
    """Parse and normalise a store URL to the async driver of its database.

    ``postgres://`` and ``postgresql://`` become ``postgresql+asyncpg://``; ``sqlite://`` becomes
    ``sqlite+aiosqlite://``. Error messages never carry the password.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError("not a database URL (expected postgresql://... or sqlite://...)") from None
    if parsed.drivername in _POSTGRES_ALIASES:
        return parsed.set(drivername=POSTGRES_DRIVER)
    if parsed.drivername in _SQLITE_ALIASES:
        return parsed.set(drivername=SQLITE_DRIVER)
    raise ValueError(f"unsupported database URL: {safe_url(parsed)}")


def safe_url(url: URL | str) -> str:
    """The URL as text with its password masked, for messages and logs."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"
    return parsed.render_as_string(hide_password=True)


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _is_memory_sqlite(url: URL) -> bool:
    return url.database in (None, "", ":memory:")


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
"""libpq's ``sslmode`` values, which asyncpg takes as its ``ssl`` argument."""


def ssl_mode(url: URL) -> str | None:
    """The URL's ``sslmode`` (libpq's spelling, as operators write it), validated."""
    mode = url.query.get("sslmode")
    if mode is None:
        return None
    if not isinstance(mode, str) or mode not in SSL_MODES:
        raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}, not {mode!r}")
    return mode


class JsonText(str):
    """A JSON column's value already encoded as JSON text: stored as it is, not encoded again.

    The row mapping encodes each JSON value once, to text, so that the same value can go to
    SQLAlchemy (whose JSON type hands it to :func:`json_text`, which passes it through) and
    straight to asyncpg (as text, which the statement casts to ``json``)."""

    __slots__ = ()


def json_text(value: Any) -> str:
    """JSON columns' text (:func:`persistence.codec.dumps`); text that is already
    :class:`JsonText` is returned unchanged."""
    if isinstance(value, JsonText):
        return value
    return dumps(value)


def json_column(value: Any) -> JsonText:
    """``value`` encoded for a JSON column, once."""
    return JsonText(json_text(value))


def make_engine(url: URL, *, purpose: Purpose = "store", existing: bool = False) -> AsyncEngine:
    """The engine of ``url``; ``existing``: a SQLite file must be there already. Raises
    :class:`~persistence.errors.DatabaseMissing` for a SQLite path that cannot be used."""
    if is_sqlite(url):
        return _sqlite_engine(url, existing=existing)
    connect_args: dict[str, Any] = {
        "timeout": CONNECT_TIMEOUT_S,
        "command_timeout": _PG_COMMAND_TIMEOUT_S[purpose],
        "server_settings": {"application_name": "meerkat-worker", **_PG_TIMEOUTS[purpose]},
    }
    # asyncpg has no ``sslmode`` keyword (SQLAlchemy would pass it on and fail with a
    # TypeError): the mode goes in as ``ssl``, which takes the same values.
    mode = ssl_mode(url)
    if mode is not None:
        connect_args["ssl"] = mode
        url = url.difference_update_query(["sslmode"])
    # pre-ping: after a database restart the pooled connections are dead; test before use
    # rather than failing the first commit of every pooled connection.
    return create_async_engine(url, connect_args=connect_args, pool_pre_ping=True,
                               pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW,
                               json_serializer=json_text)


def _sqlite_engine(url: URL, *, existing: bool) -> AsyncEngine:
    if _is_memory_sqlite(url):
        engine = create_async_engine(url, poolclass=StaticPool, json_serializer=json_text)
    else:
        path = Path(str(url.database)).expanduser().absolute()
        if not path.parent.exists():  # a file in the way fails later, as unavailable
            raise DatabaseMissing(
                "sqlite_folder", f"the folder {path.parent} of the SQLite database does not exist"
            )
        if existing and not path.is_file():
            raise DatabaseMissing("sqlite_file", f"there is no SQLite database at {path}")
        engine = create_async_engine(url, json_serializer=json_text)
    event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # The busy timeout first: switching to WAL needs a lock another connection may hold.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _begin_sqlite_transaction(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")
