"""Alembic environment and revisions of the runtime store schema."""
