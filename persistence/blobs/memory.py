"""A blob store in a dict, for tests and embedded use; it passes the same contract suite as the
file system and S3 stores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from persistence.blobs.envelope import (
    DEFAULT_MAX_BLOB_BYTES,
    blob_digest,
    check_size,
    decode_envelope,
    encode_envelope,
)
from persistence.errors import BlobNotFound
from persistence.ports import BlobInfo, StoredBlob
from schemas.validation import blob_id_for


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Entry:
    envelope: bytes
    modified_at: datetime


class MemoryBlobStore:
    """Blobs held in memory. ``clock`` stamps each put, so a test can age blobs for the
    collector."""

    def __init__(
        self,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.max_blob_bytes = max_blob_bytes
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def __repr__(self) -> str:
        return f"MemoryBlobStore(blobs={len(self._entries)})"

    async def put_image(self, media_type: str, data_base64: str) -> str:
        check_size(data_base64, self.max_blob_bytes)
        blob_id = blob_id_for(media_type, data_base64)
        # A repeated put refreshes the stamp, as the other stores do: the collector must not take
        # a blob that a commit is about to reference again.
        self._entries[blob_id] = _Entry(encode_envelope(media_type, data_base64), self._clock())
        return blob_id

    async def get(self, blob_id: str) -> StoredBlob:
        blob_digest(blob_id)
        entry = self._entries.get(blob_id)
        if entry is None:
            raise BlobNotFound(blob_id)
        return decode_envelope(blob_id, entry.envelope)

    async def exists(self, blob_id: str) -> bool:
        blob_digest(blob_id)
        return blob_id in self._entries

    async def delete(self, blob_id: str) -> None:
        blob_digest(blob_id)
        self._entries.pop(blob_id, None)

    async def list_blobs(self) -> list[BlobInfo]:
        return [
            BlobInfo(blob_id=blob_id, size=len(entry.envelope), modified_at=entry.modified_at)
            for blob_id, entry in sorted(self._entries.items())
        ]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
