"""The SQL runtime store (PostgreSQL and SQLite) and its schema.

:mod:`persistence.sql.store` is the store (``SqlRuntimeStore``, ``open_store``), its mixins are
:mod:`~persistence.sql.history` and :mod:`~persistence.sql.membership` over
:mod:`~persistence.sql.connections`; :mod:`~persistence.sql.tables` is the schema,
:mod:`~persistence.sql.rows` the row mapping, :mod:`~persistence.sql.writes` the statements of a
commit (on PostgreSQL sent straight to asyncpg by :mod:`~persistence.sql.driver_writes`, as
the array statements of :mod:`~persistence.sql.batched`). This package imports none of them,
so that importing one (the migrations import ``engine`` and ``tables``) never loads the store.
"""
