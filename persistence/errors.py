"""Typed store errors. ``transient`` says whether retrying the same message may succeed."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store and blob-store failure."""

    transient: bool = False


class StoreUnavailable(StoreError):
    """The database or blob store could not be reached or failed mid-call; retry later."""

    transient = True


class CommitOutcomeUnknown(StoreUnavailable):
    """The connection died during COMMIT: the write may or may not be durable.

    The caller drops its cached runtime and reloads before using it again.
    """


class VersionConflict(StoreError):
    """The runtime row's version moved: another writer committed first. Reload and retry."""

    transient = True

    def __init__(self, runtime_id: str, expected: int) -> None:
        super().__init__(f"runtime {runtime_id!r}: stored version is not {expected}")
        self.runtime_id = runtime_id
        self.expected = expected


class DuplicateRow(StoreError):
    """A unique constraint refused the write (input id, idempotency key, receipt, command id)."""

    def __init__(self, what: str, detail: str = "") -> None:
        super().__init__(f"duplicate {what}" + (f": {detail}" if detail else ""))
        self.what = what


class ReceiptConflict(DuplicateRow):
    """A boundary receipt for (runtime, run, sequence) exists already; nothing was written."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("boundary receipt", detail)


class BlobNotFound(StoreError):
    def __init__(self, blob_id: str) -> None:
        super().__init__(f"blob {blob_id} not found")
        self.blob_id = blob_id


class InvalidBlobId(StoreError):
    def __init__(self, blob_id: str) -> None:
        super().__init__(f"not a canonical blob id (sha256:<64 lowercase hex>): {blob_id!r}")
        self.blob_id = blob_id


class BlobTooLarge(StoreError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"blob of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit


class BlobCorrupt(StoreError):
    """A stored blob does not match its content address or cannot be decoded."""


class UnsafeDatabase(StoreError):
    """The database is configured so that a commit may not be durable (synchronous_commit off)."""


class DatabaseMissing(StoreError):
    """The database the URL names does not exist: a SQLite file (for a command that only
    reads) or the folder it would be made in, a PostgreSQL database. ``kind`` says which:
    ``sqlite_folder``, ``sqlite_file`` or ``postgresql_database``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class SchemaMismatch(StoreError):
    """The database's schema is not the one this code needs. ``behind``: it is older (or
    absent), and migrating brings it to head; otherwise a newer version migrated it."""

    def __init__(self, message: str, *, behind: bool) -> None:
        super().__init__(message)
        self.behind = behind
