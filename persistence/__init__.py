"""Persistence: where the worker's state, its outbox and its images are kept.

Theory of operation
-------------------
The worker's core decides; this package keeps what was decided. Every caller depends on a port,
a ``typing.Protocol`` in :mod:`persistence.ports`, never on an implementation. There is one port
per concern, so each caller asks for only what it uses:

- :class:`~persistence.ports.RuntimeStateStore`, the runtime state: cold load of a runtime
  (``load_runtime``, with the rule for which receipts count), deduplication lookups
  (``find_input``, ``find_command``), the one-transaction ``commit`` of a batch of decisions
  (fenced by each runtime row's version), session snapshots, the runtimes with work left
  behind, ``ping``. The store is opened as one writer (``writer_id``, the worker's id), which is
  recorded on every runtime row it writes. Used by the driver, the committer and the worker.
- :class:`~persistence.ports.OutboxStore`: the events committed with the state change they
  describe, read and marked sent by the outbox relay.
- :class:`~persistence.ports.InspectionStore`: read-only queries for ``inspect``, tests and the
  blob garbage collector's ``referenced_blob_ids``.
- :class:`~persistence.ports.MembershipStore`: the heartbeat rows membership assigns shards over.
- :class:`~persistence.ports.RuntimeStore` is those four together plus ``close``: what
  :func:`persistence.factory.open_runtime_store` opens from a URL.
- :class:`~persistence.ports.HistoryReader`: unabridged history for ``verify``.
- :class:`~persistence.ports.BlobStore`: content-addressed images.

Who implements them
-------------------
:class:`persistence.memory.MemoryRuntimeStore` (dictionaries, the reference) and
:class:`persistence.sql.store.SqlRuntimeStore` (SQLite and PostgreSQL, SQLAlchemy Core) each
implement every runtime-store port and ``HistoryReader``; ``tests/contract`` runs one suite over
all three stores. A commit is first folded into the fewest writes (:mod:`persistence.plan`); the
SQL store maps rows in :mod:`persistence.sql.rows` (JSON values through :mod:`persistence.codec`)
and turns database failures into the typed errors of :mod:`persistence.errors`. The schema is
:mod:`persistence.sql.tables`, migrated by Alembic through :mod:`persistence.migrate`.
:mod:`persistence.blobs` holds the blob stores (memory, filesystem, S3) and the garbage
collector.

Layering, bottom up (each module imports only those below it): ``errors``, ``codec``,
``ports``, ``plan``; ``sql.tables``, ``sql.engine``, ``sql.failures``, ``sql.rows``,
``sql.connections``, ``sql.writes``; ``migrate``; ``sql.history``, ``sql.membership``,
``sql.store``; ``memory``; ``factory``. This package module imports nothing.
"""
