"""Indexes for the pruner: each table it deletes from is scanned by age, never in full.

Sent outbox events by ``sent_at``, terminal inputs by ``updated_at`` (partial indexes: the
unsent events and the live inputs are not in them), receipts by ``committed_at``, processed
commands by ``processed_at``. No column is added: ``event_outbox.sent_at`` is already set when
the relay marks an event sent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TERMINAL = sa.text("phase IN ('abandoned', 'coalesced', 'consumed', 'superseded')")
_SENT = sa.text("sent_at IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_event_outbox_sent_at", "event_outbox", ["sent_at"],
                    postgresql_where=_SENT, sqlite_where=_SENT)
    op.create_index("ix_inputs_terminal_updated_at", "inputs", ["updated_at"],
                    postgresql_where=_TERMINAL, sqlite_where=_TERMINAL)
    op.create_index(op.f("ix_boundary_receipts_committed_at"), "boundary_receipts",
                    ["committed_at"])
    op.create_index(op.f("ix_processed_commands_processed_at"), "processed_commands",
                    ["processed_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_processed_commands_processed_at"), table_name="processed_commands")
    op.drop_index(op.f("ix_boundary_receipts_committed_at"), table_name="boundary_receipts")
    op.drop_index("ix_inputs_terminal_updated_at", table_name="inputs")
    op.drop_index("ix_event_outbox_sent_at", table_name="event_outbox")
