"""The SQL schema, identical for PostgreSQL and SQLite.

The inputs table keeps the full codec of each input in ``state``; the other columns of an input
are copies of the fields that queries filter on or constraints guard. The enum columns carry
CHECK constraints built from the ``StrEnum`` s, so the database refuses a phase the code does not
know (a test checks each list against its enum). Constraint names follow one convention so that
an integrity error can be told apart by name on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    column,
    false,
)

from schemas import Durability, InputKind, InputPhase, Lane, RuntimePhase
from schemas.states import TERMINAL_INPUT_PHASES

NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

RUNTIME_ID_LENGTH = 200
KEY_LENGTH = 256
PHASE_LENGTH = 32
TRACEPARENT_LENGTH = 128
"""A W3C ``traceparent`` is 55 characters in version 00; later versions may append fields."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both databases.

    SQLite has no time zone type and hands back naive values; they are UTC by construction
    because only UTC is ever written.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime cannot be stored: {value!r}")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def enum_values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


def one_of(name: str, enum: type[StrEnum], *, nullable: bool = False) -> CheckConstraint:
    """CHECK that column ``name`` holds one of the enum's values."""
    values = ", ".join(f"'{value}'" for value in enum_values(enum))
    condition = f"{name} IN ({values})"
    if nullable:
        condition = f"{name} IS NULL OR {condition}"
    return CheckConstraint(condition, name=name)


CHECKED_ENUMS: dict[tuple[str, str], type[StrEnum]] = {
    ("runtimes", "phase"): RuntimePhase,
    ("runtimes", "pre_run_phase"): RuntimePhase,
    ("inputs", "phase"): InputPhase,
    ("inputs", "lane"): Lane,
    ("inputs", "kind"): InputKind,
    ("inputs", "durability"): Durability,
}
"""Every enum-valued column and the enum its CHECK constraint is built from."""

runtimes = Table(
    "runtimes",
    metadata,
    Column("runtime_id", String(RUNTIME_ID_LENGTH), nullable=False),
    Column("phase", String(PHASE_LENGTH), nullable=False),
    Column("pre_run_phase", String(PHASE_LENGTH), nullable=True),
    Column("current_run_id", Uuid(), nullable=True),
    Column("next_admission_seq", BigInteger(), nullable=False),
    Column("version", BigInteger(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("last_writer", String(200), nullable=True),
    Column("writer_group", String(200), nullable=True),
    PrimaryKeyConstraint("runtime_id"),
    one_of("phase", RuntimePhase),
    one_of("pre_run_phase", RuntimePhase, nullable=True),
    Index(None, "phase"),
)

TERMINAL_PHASES = sorted(phase.value for phase in TERMINAL_INPUT_PHASES)
TERMINAL_CONDITION = column("phase").in_(TERMINAL_PHASES)
"""Rows of inputs in a terminal phase (the only ones the pruner may delete)."""

inputs = Table(
    "inputs",
    metadata,
    Column("runtime_id", String(RUNTIME_ID_LENGTH), nullable=False),
    Column("input_id", Uuid(), nullable=False),
    Column("phase", String(PHASE_LENGTH), nullable=False),
    Column("lane", String(PHASE_LENGTH), nullable=False),
    Column("admission_seq", BigInteger(), nullable=False),
    Column("kind", String(PHASE_LENGTH), nullable=False),
    Column("durability", String(PHASE_LENGTH), nullable=False),
    Column("idempotency_key", String(KEY_LENGTH), nullable=True),
    Column("supersession_key", String(KEY_LENGTH), nullable=True),
    Column("last_run_id", Uuid(), nullable=True),
    Column("boundary_sequence", BigInteger(), nullable=True),
    Column("state", JSON(), nullable=False),
    # Blob ids the payload refers to (NULL when none), read by the blob garbage collector.
    Column("blob_ids", JSON(none_as_null=True), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("runtime_id", "input_id"),
    ForeignKeyConstraint(["runtime_id"], ["runtimes.runtime_id"]),
    UniqueConstraint("runtime_id", "idempotency_key"),
    one_of("phase", InputPhase),
    one_of("lane", Lane),
    one_of("kind", InputKind),
    one_of("durability", Durability),
    Index(None, "runtime_id", "phase", "lane", "admission_seq"),
    # Finds the runtimes with pending work after a restart without reading terminal rows.
    Index(None, "phase", "runtime_id"),
    # The pruner's scan: terminal rows by age, without reading live ones.
    Index(
        "ix_inputs_terminal_updated_at",
        "updated_at",
        postgresql_where=TERMINAL_CONDITION,
        sqlite_where=TERMINAL_CONDITION,
    ),
)

boundary_receipts = Table(
    "boundary_receipts",
    metadata,
    Column("runtime_id", String(RUNTIME_ID_LENGTH), nullable=False),
    Column("run_id", Uuid(), nullable=False),
    Column("sequence", BigInteger(), nullable=False),
    Column("contributing_input_ids", JSON(), nullable=False),
    Column("conversation_digest", String(128), nullable=False),
    Column("message_count", Integer(), nullable=False),
    Column("committed_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("runtime_id", "run_id", "sequence"),
    ForeignKeyConstraint(["runtime_id"], ["runtimes.runtime_id"]),
    Index(None, "committed_at"),
)

session_snapshots = Table(
    "session_snapshots",
    metadata,
    Column("runtime_id", String(RUNTIME_ID_LENGTH), nullable=False),
    Column("run_id", Uuid(), nullable=False),
    Column("body", JSON(), nullable=False),
    Column("digest", String(128), nullable=False),
    Column("message_count", Integer(), nullable=False),
    Column("committed_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("runtime_id"),
    ForeignKeyConstraint(["runtime_id"], ["runtimes.runtime_id"]),
)

processed_commands = Table(
    "processed_commands",
    metadata,
    Column("runtime_id", String(RUNTIME_ID_LENGTH), nullable=False),
    Column("command_id", Uuid(), nullable=False),
    Column("command_type", String(64), nullable=False),
    Column("outcome", JSON(), nullable=False),
    Column("processed_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("runtime_id", "command_id"),
    ForeignKeyConstraint(["runtime_id"], ["runtimes.runtime_id"]),
    Index(None, "processed_at"),
)

event_outbox = Table(
    "event_outbox",
    metadata,
    # SQLite only numbers rows by itself for an INTEGER PRIMARY KEY; PostgreSQL gets a BIGSERIAL.
    Column(
        "position",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("event_id", Uuid(), nullable=False),
    # No foreign key: a rejection event may name a runtime that was never stored.
    Column("runtime_id", String(RUNTIME_ID_LENGTH), nullable=False),
    Column("code", String(64), nullable=False),
    Column("body", JSON(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime(), nullable=True),
    # The W3C trace context of the decision that made the event, propagated when it is
    # published (the event's JSON does not carry it). Null when tracing was off.
    Column("traceparent", String(TRACEPARENT_LENGTH), nullable=True),
    # The deployment (topology prefix) whose commit wrote the event: its relay publishes it.
    Column("writer_group", String(200), nullable=True),
    UniqueConstraint("event_id"),
    Index(None, "runtime_id", "position"),
    Index(
        "ix_event_outbox_unsent",
        "position",
        postgresql_where=column("sent_at").is_(None),
        sqlite_where=column("sent_at").is_(None),
    ),
    # The pruner's scan: sent events by the time they were sent.
    Index(
        "ix_event_outbox_sent_at",
        "sent_at",
        postgresql_where=column("sent_at").is_not(None),
        sqlite_where=column("sent_at").is_not(None),
    ),
    # Positions are never reused, even after sent events are pruned.
    sqlite_autoincrement=True,
)

WORKER_ID_LENGTH = 200
GROUP_LENGTH = 64
VERSION_LENGTH = 64

workers = Table(
    "workers",
    metadata,
    # One heartbeat row per running worker; membership assigns the shard queues over them.
    Column("worker_id", String(WORKER_ID_LENGTH), nullable=False),
    # Deployments sharing one database (one topology prefix each) do not share shards.
    Column("group_name", String(GROUP_LENGTH), nullable=False),
    Column("last_seen", UtcDateTime(), nullable=False),
    # What ``meerkat-worker members`` shows (revision 0008): the worker's version, the shard
    # queues it consumed at its last heartbeat (comma-separated), and whether it is leaving.
    Column("version", String(VERSION_LENGTH), nullable=False, server_default=""),
    Column("shards", Text(), nullable=False, server_default=""),
    Column("leaving", Boolean(), nullable=False, server_default=false()),
    PrimaryKeyConstraint("worker_id"),
    Index(None, "group_name", "last_seen"),
)
