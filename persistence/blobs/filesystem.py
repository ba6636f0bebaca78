"""A blob store in a directory: ``<root>/<first 2 hex>/<64 hex>.json``, one JSON envelope per blob.

Writes go to a temporary file in the blob's own shard folder, are fsynced, then renamed over the
final name (``os.replace`` is atomic within one file system), and the folder is fsynced so the
rename itself survives a crash. A reader therefore sees either no blob or a whole one; a crash
mid-write leaves only a ``.tmp-*.part`` file, which is never listed as a blob. File I/O runs in a
worker thread so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import stat
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from persistence.blobs.envelope import (
    DEFAULT_MAX_BLOB_BYTES,
    blob_digest,
    check_size,
    decode_envelope,
    encode_envelope,
)
from persistence.errors import BlobNotFound, StoreUnavailable
from persistence.ports import BlobInfo, StoredBlob
from schemas.validation import blob_id_for

_T = TypeVar("_T")

_SHARD = re.compile(r"[0-9a-f]{2}")
_BLOB_FILE = re.compile(r"([0-9a-f]{64})\.json")
_TEMP_PREFIX = ".tmp-"
_TEMP_SUFFIX = ".part"


class FileBlobStore:
    def __init__(self, root: Path | str, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.root = Path(root)
        self.max_blob_bytes = max_blob_bytes

    def __repr__(self) -> str:
        return f"FileBlobStore(root={str(self.root)!r})"

    def path_for(self, blob_id: str) -> Path:
        """Where the blob lives; InvalidBlobId unless the id is canonical."""
        digest = blob_digest(blob_id)
        return self.root / digest[:2] / f"{digest}.json"

    async def put_image(self, media_type: str, data_base64: str) -> str:
        check_size(data_base64, self.max_blob_bytes)
        blob_id = blob_id_for(media_type, data_base64)
        envelope = encode_envelope(media_type, data_base64)
        # Rewriting an existing blob is deliberate: the bytes are the same, and the fresh mtime
        # keeps the collector off a blob that a commit is about to reference again.
        await self._in_thread(_write_atomically, self.path_for(blob_id), envelope)
        return blob_id

    async def get(self, blob_id: str) -> StoredBlob:
        raw = await self._in_thread(_read, self.path_for(blob_id), blob_id)
        return decode_envelope(blob_id, raw)

    async def exists(self, blob_id: str) -> bool:
        return await self._in_thread(_is_stored, self.path_for(blob_id))

    async def delete(self, blob_id: str) -> None:
        await self._in_thread(functools.partial(self.path_for(blob_id).unlink, missing_ok=True))

    async def list_blobs(self) -> list[BlobInfo]:
        return await self._in_thread(_scan, self.root)

    async def ping(self) -> None:
        await self._in_thread(_check_writable, self.root)

    async def close(self) -> None:
        return None

    async def _in_thread(self, call: Callable[..., _T], *args: object) -> _T:
        try:
            return await asyncio.to_thread(call, *args)
        except OSError as exc:
            raise StoreUnavailable(f"blob directory {str(self.root)!r}: {exc}") from exc


def _read(path: Path, blob_id: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise BlobNotFound(blob_id) from exc


def _is_stored(path: Path) -> bool:
    """Whether the blob's file is there. Only "no such file" means no: ``Path.is_file`` would
    also say False when the root is not a directory (ENOTDIR), and admission would then refuse
    an input for good because the blob store could not answer. Any other OSError propagates and
    becomes StoreUnavailable."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except FileNotFoundError:
        return False


def _write_atomically(path: Path, envelope: bytes) -> None:
    shard = path.parent
    new_shard = not shard.is_dir()
    shard.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=shard, prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(envelope)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    _fsync_directory(shard)
    if new_shard:
        _fsync_directory(shard.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan(root: Path) -> list[BlobInfo]:
    if not root.is_dir():
        return []
    found: list[BlobInfo] = []
    for shard in sorted(root.iterdir()):
        if not _SHARD.fullmatch(shard.name) or not shard.is_dir():
            continue
        for entry in sorted(shard.iterdir()):
            match = _BLOB_FILE.fullmatch(entry.name)
            # A file in the wrong shard is not reachable by its id, so it is not a blob either.
            if match is None or not match.group(1).startswith(shard.name):
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue  # deleted while we looked
            found.append(
                BlobInfo(
                    blob_id="sha256:" + match.group(1),
                    size=stat.st_size,
                    modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                )
            )
    return found


def _check_writable(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to {str(root)!r}")
