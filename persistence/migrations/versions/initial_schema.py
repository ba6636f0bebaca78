"""The runtime store: runtimes, inputs, receipts, snapshots, processed commands, event outbox.

Revision ID: 0001
Revises:
Create Date: 2024-06-01

The CHECK value lists are written out, not imported from the enums: a revision describes the
schema as it was. A new enum value needs a new revision, and the schema test catches a missing one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RUNTIME_PHASES = "'initializing', 'idle', 'attached', 'running', 'retired', 'stopped', 'destroyed'"
_INPUT_PHASES = (
    "'queued', 'staged', 'applied', 'applied_pending_consumption', 'consumed', 'coalesced', "
    "'superseded', 'abandoned'"
)
_LANES = "'steer', 'queue'"
_KINDS = (
    "'prompt', 'peer_message', 'peer_request', 'peer_response_progress', "
    "'peer_response_terminal', 'flow_step', 'external_event', 'continuation', 'operation'"
)
_DURABILITIES = "'durable', 'ephemeral', 'derived'"


def _runtime_id() -> sa.Column[str]:
    return sa.Column("runtime_id", sa.String(200), nullable=False)


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _runtime_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["runtime_id"], ["runtimes.runtime_id"], name=op.f(f"fk_{table}_runtime_id_runtimes")
    )


def upgrade() -> None:
    op.create_table(
        "runtimes",
        _runtime_id(),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("pre_run_phase", sa.String(32), nullable=True),
        sa.Column("current_run_id", sa.Uuid(), nullable=True),
        sa.Column("next_admission_seq", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("runtime_id", name=op.f("pk_runtimes")),
        sa.CheckConstraint(f"phase IN ({_RUNTIME_PHASES})", name=op.f("ck_runtimes_phase")),
        sa.CheckConstraint(
            f"pre_run_phase IS NULL OR pre_run_phase IN ({_RUNTIME_PHASES})",
            name=op.f("ck_runtimes_pre_run_phase"),
        ),
    )
    op.create_index(op.f("ix_runtimes_phase"), "runtimes", ["phase"])
    op.create_table(
        "inputs",
        _runtime_id(),
        sa.Column("input_id", sa.Uuid(), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("lane", sa.String(32), nullable=False),
        sa.Column("admission_seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("durability", sa.String(32), nullable=False),
        sa.Column("idempotency_key", sa.String(256), nullable=True),
        sa.Column("supersession_key", sa.String(256), nullable=True),
        sa.Column("last_run_id", sa.Uuid(), nullable=True),
        sa.Column("boundary_sequence", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("blob_ids", sa.JSON(none_as_null=True), nullable=True),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("runtime_id", "input_id", name=op.f("pk_inputs")),
        _runtime_fk("inputs"),
        sa.UniqueConstraint(
            "runtime_id", "idempotency_key", name=op.f("uq_inputs_runtime_id_idempotency_key")
        ),
        sa.CheckConstraint(f"phase IN ({_INPUT_PHASES})", name=op.f("ck_inputs_phase")),
        sa.CheckConstraint(f"lane IN ({_LANES})", name=op.f("ck_inputs_lane")),
        sa.CheckConstraint(f"kind IN ({_KINDS})", name=op.f("ck_inputs_kind")),
        sa.CheckConstraint(f"durability IN ({_DURABILITIES})", name=op.f("ck_inputs_durability")),
    )
    op.create_index(
        op.f("ix_inputs_runtime_id_phase_lane_admission_seq"),
        "inputs",
        ["runtime_id", "phase", "lane", "admission_seq"],
    )
    op.create_index(op.f("ix_inputs_phase_runtime_id"), "inputs", ["phase", "runtime_id"])
    op.create_table(
        "boundary_receipts",
        _runtime_id(),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("contributing_input_ids", sa.JSON(), nullable=False),
        sa.Column("conversation_digest", sa.String(128), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        _time("committed_at"),
        sa.PrimaryKeyConstraint(
            "runtime_id", "run_id", "sequence", name=op.f("pk_boundary_receipts")
        ),
        _runtime_fk("boundary_receipts"),
    )
    op.create_table(
        "session_snapshots",
        _runtime_id(),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        _time("committed_at"),
        sa.PrimaryKeyConstraint("runtime_id", name=op.f("pk_session_snapshots")),
        _runtime_fk("session_snapshots"),
    )
    op.create_table(
        "processed_commands",
        _runtime_id(),
        sa.Column("command_id", sa.Uuid(), nullable=False),
        sa.Column("command_type", sa.String(64), nullable=False),
        sa.Column("outcome", sa.JSON(), nullable=False),
        _time("processed_at"),
        sa.PrimaryKeyConstraint("runtime_id", "command_id", name=op.f("pk_processed_commands")),
        _runtime_fk("processed_commands"),
    )
    op.create_table(
        "event_outbox",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        _runtime_id(),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        _time("created_at"),
        _time("sent_at", nullable=True),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_event_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_event_outbox_event_id")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_event_outbox_runtime_id_position"), "event_outbox", ["runtime_id", "position"]
    )
    op.create_index(
        op.f("ix_event_outbox_unsent"),
        "event_outbox",
        ["position"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )


def downgrade() -> None:
    for table in (
        "event_outbox",
        "processed_commands",
        "session_snapshots",
        "boundary_receipts",
        "inputs",
        "runtimes",
    ):
        op.drop_table(table)
