"""The stored form of a blob, shared by every blob store.

Each store keeps the same bytes under a content address: a compact JSON envelope
``{"media_type": ..., "data": ...}`` whose ``data`` is the exact base64 text of the image. Keeping
the base64 text (rather than the decoded bytes) is what makes the address checkable on every read:
the address is defined over that text (``schemas.validation.blob_id_for``), so a reader recomputes
it and refuses a blob whose bytes no longer match its name.
"""

from __future__ import annotations

import json
import re

import orjson

from persistence.errors import BlobCorrupt, BlobTooLarge, InvalidBlobId
from persistence.ports import StoredBlob
from schemas.validation import blob_id_for

DEFAULT_MAX_BLOB_BYTES = 5 * 1024 * 1024

# ``fullmatch`` and an explicit class: ``$`` would let a trailing newline through, and ``\w`` or
# ``[0-9a-fA-F]`` would give one blob two names (and a file system two paths).
_BLOB_ID = re.compile(r"sha256:([0-9a-f]{64})")


def blob_digest(blob_id: object) -> str:
    """The 64 lowercase hex digits of a canonical blob id; InvalidBlobId for anything else.

    Every store derives its object key or file path from this value only, so an id like
    ``sha256:../../etc`` can never name a location outside the store.
    """
    match = _BLOB_ID.fullmatch(blob_id) if isinstance(blob_id, str) else None
    if match is None:
        raise InvalidBlobId(str(blob_id))
    return match.group(1)


def normalize_media_type(media_type: str) -> str:
    """The media type as the content address sees it, so that a blob's content is a function of
    its id whichever spelling was put first."""
    return media_type.strip().lower()


def decoded_size(data_base64: str) -> int:
    """Byte count of the image the base64 text encodes, without decoding it."""
    return len(data_base64.rstrip("=")) * 3 // 4


def check_size(data_base64: str, max_blob_bytes: int) -> None:
    size = decoded_size(data_base64)
    if size > max_blob_bytes:
        raise BlobTooLarge(size, max_blob_bytes)


def encode_envelope(media_type: str, data_base64: str) -> bytes:
    """The envelope's compact JSON (orjson: the image's base64 text is long)."""
    return orjson.dumps({"media_type": normalize_media_type(media_type), "data": data_base64})


def decode_envelope(blob_id: str, raw: bytes) -> StoredBlob:
    """Read an envelope back and check it against the address it was stored under."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BlobCorrupt(f"blob {blob_id} is not a JSON envelope") from exc
    if not isinstance(document, dict):
        raise BlobCorrupt(f"blob {blob_id} is not a JSON object")
    media_type = document.get("media_type")
    data = document.get("data")
    if not isinstance(media_type, str) or not isinstance(data, str):
        raise BlobCorrupt(f"blob {blob_id} lacks a string media_type or data")
    if blob_id_for(media_type, data) != blob_id:
        raise BlobCorrupt(f"blob {blob_id} does not match its content address")
    return StoredBlob(blob_id=blob_id, media_type=media_type, data_base64=data)
