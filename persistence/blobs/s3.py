"""A blob store in an S3 bucket (MinIO or any S3), through the ``minio`` SDK.

Layout: object ``<prefix>images/<64 hex>`` holds the same JSON envelope as the other stores
(``{"media_type", "data"}``, content type ``application/json``). Keeping the envelope rather than
the raw image with metadata means one read returns everything, a listing needs no per-object
metadata call, and the content address is checkable from the body alone.

The SDK is blocking, so every call runs in a worker thread. The bucket is created on first contact
(``ensure_bucket``) so a fresh MinIO needs no set-up step. SDK and network failures become
``StoreUnavailable``; a missing object becomes ``BlobNotFound``. The secret key is held only by the
SDK client and appears in no message and no ``repr``.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections.abc import Callable
from typing import TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

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

_DIGEST = re.compile(r"[0-9a-f]{64}")
_MISSING_OBJECT = frozenset({"NoSuchKey", "NoSuchObject"})
_BUCKET_RACE = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


class _ObjectMissingError(Exception):
    """Internal: the SDK said the object does not exist."""


class S3BlobStore:
    def __init__(
        self,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        bucket: str,
        *,
        secure: bool = True,
        region: str | None = None,
        prefix: str = "",
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        timeout_seconds: float = 10.0,
        ca_file: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.secure = secure
        self.max_blob_bytes = max_blob_bytes
        self.key_prefix = (prefix.strip("/") + "/" if prefix.strip("/") else "") + "images/"
        self._http = _http_client(timeout_seconds, ca_file)
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=self._http,
        )
        self._bucket_ready = False

    def __repr__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"S3BlobStore({scheme}://{self.endpoint}/{self.bucket}/{self.key_prefix})"

    def key_for(self, blob_id: str) -> str:
        """Object name of a blob; InvalidBlobId unless the id is canonical."""
        return self.key_prefix + blob_digest(blob_id)

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent, safe against a concurrent create)."""
        if not await self._sdk(self._client.bucket_exists, self.bucket):
            await self._sdk(self._create_bucket)
        self._bucket_ready = True

    async def put_image(self, media_type: str, data_base64: str) -> str:
        check_size(data_base64, self.max_blob_bytes)
        blob_id = blob_id_for(media_type, data_base64)
        key = self.key_for(blob_id)
        envelope = encode_envelope(media_type, data_base64)
        await self._ready()
        # Always written, even when present: same bytes, and a fresh last-modified time keeps the
        # collector off a blob that a commit is about to reference again.
        await self._sdk(
            self._client.put_object,
            self.bucket,
            key,
            io.BytesIO(envelope),
            len(envelope),
            content_type="application/json",
        )
        return blob_id

    async def get(self, blob_id: str) -> StoredBlob:
        key = self.key_for(blob_id)
        await self._ready()
        try:
            raw = await self._sdk(self._read_object, key)
        except _ObjectMissingError as exc:
            raise BlobNotFound(blob_id) from exc
        return decode_envelope(blob_id, raw)

    async def exists(self, blob_id: str) -> bool:
        """Whether the blob is stored; StoreUnavailable when S3 cannot say.

        A HEAD has no body, so S3's 404 cannot tell a missing object from a missing bucket
        (the SDK calls both NoSuchKey). Admission refuses an input for good on a False, so a
        False is confirmed by asking for the bucket: a bucket deleted or not yet made is an
        outage, not a missing blob.
        """
        key = self.key_for(blob_id)
        await self._ready()
        try:
            await self._sdk(self._client.stat_object, self.bucket, key)
        except _ObjectMissingError:
            if not await self._sdk(self._client.bucket_exists, self.bucket):
                self._bucket_ready = False
                raise StoreUnavailable(
                    f"S3 {self.endpoint}/{self.bucket}: the bucket does not exist"
                ) from None
            return False
        return True

    async def delete(self, blob_id: str) -> None:
        key = self.key_for(blob_id)
        await self._ready()
        try:
            await self._sdk(self._client.remove_object, self.bucket, key)
        except _ObjectMissingError:
            return

    async def list_blobs(self) -> list[BlobInfo]:
        await self._ready()
        return await self._sdk(self._scan)

    async def ping(self) -> None:
        await self.ensure_bucket()

    async def close(self) -> None:
        self._http.clear()

    async def _ready(self) -> None:
        if not self._bucket_ready:
            await self.ensure_bucket()

    def _create_bucket(self) -> None:
        try:
            self._client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in _BUCKET_RACE:
                raise

    def _read_object(self, key: str) -> bytes:
        response = self._client.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def _scan(self) -> list[BlobInfo]:
        found: list[BlobInfo] = []
        for item in self._client.list_objects(self.bucket, prefix=self.key_prefix, recursive=True):
            digest = (item.object_name or "").removeprefix(self.key_prefix)
            if not _DIGEST.fullmatch(digest) or item.last_modified is None:
                continue
            found.append(
                BlobInfo(
                    blob_id="sha256:" + digest,
                    size=item.size or 0,
                    modified_at=item.last_modified,
                )
            )
        return found

    async def _sdk(self, call: Callable[..., _T], *args: object, **kwargs: object) -> _T:
        """Run one blocking SDK call in a thread and translate its failures."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except S3Error as exc:
            if exc.code in _MISSING_OBJECT:
                raise _ObjectMissingError from exc
            if exc.code == "NoSuchBucket":
                # Deleted behind our back: the next call recreates it.
                self._bucket_ready = False
            raise StoreUnavailable(
                f"S3 {self.endpoint}/{self.bucket}: {exc.code}: {exc.message}"
            ) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(
                f"S3 {self.endpoint}/{self.bucket}: {type(exc).__name__}: {exc}"
            ) from exc


def _http_client(timeout_seconds: float, ca_file: str | None = None) -> urllib3.PoolManager:
    """The SDK's own defaults, except for shorter timeouts and fewer retries: a worker should
    notice an outage in seconds, hold its batch and back off, not hang for minutes. Server
    certificates are verified against ``ca_file`` when given (a private CA), else
    ``SSL_CERT_FILE``, else certifi's bundle."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds),
        maxsize=16,
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_file or os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
