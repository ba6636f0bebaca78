"""Blob stores for images, content-addressed: in memory, in a directory, in S3 (MinIO).

Every store keeps the same JSON envelope under the id ``sha256:<64 lowercase hex>`` computed by
``schemas.validation.blob_id_for`` and passes one contract suite (``tests/contract``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from persistence.blobs.envelope import DEFAULT_MAX_BLOB_BYTES, blob_digest
from persistence.blobs.filesystem import FileBlobStore
from persistence.blobs.gc import DurationError, collect_garbage, parse_duration
from persistence.blobs.memory import MemoryBlobStore
from persistence.blobs.s3 import S3BlobStore
from persistence.ports import BlobStore

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES",
    "BlobUrlError",
    "DurationError",
    "FileBlobStore",
    "MemoryBlobStore",
    "S3BlobStore",
    "blob_digest",
    "collect_garbage",
    "open_blob_store",
    "parse_duration",
    "redact_blob_url",
]

_S3_OPTIONS = frozenset({"secure", "region", "ca_file"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class BlobUrlError(ValueError):
    """The blob store URL cannot be used. The message never repeats the URL: it may hold a
    secret."""


def open_blob_store(url: str, *, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> BlobStore:
    """The store a ``MEERKAT_BLOB_URL`` names; no I/O happens here.

    - ``memory://``
    - ``file://./blobs`` (relative to the working directory) or ``file:///abs/path``
    - ``s3://ACCESS:SECRET@HOST:PORT/BUCKET[/PREFIX]?secure=false[&region=R]`` (user and secret
      are percent-decoded; ``secure`` defaults to true: HTTPS, the server's certificate
      verified; ``ca_file=/path/ca.pem`` verifies it against a CA bundle of your own instead
      of ``SSL_CERT_FILE`` or certifi's)
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryBlobStore(max_blob_bytes)
    if scheme == "file":
        return FileBlobStore(_file_root(url), max_blob_bytes)
    if scheme == "s3":
        return _open_s3(url, max_blob_bytes)
    raise BlobUrlError(f"unsupported blob store scheme {scheme!r} (use file, s3 or memory)")


def redact_blob_url(url: str) -> str:
    """The URL with its secret replaced by ``***``, fit for logs and ``inspect`` output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _file_root(url: str) -> Path:
    parts = urlsplit(url)
    # ``file://./blobs`` parses with netloc ".": the netloc is then the first part of a
    # relative path, not a host.
    host = parts.netloc
    path = unquote(host + parts.path if host not in ("", "localhost") else parts.path)
    if not path:
        raise BlobUrlError("file blob URL names no directory")
    return Path(path)


def _open_s3(url: str, max_blob_bytes: int) -> S3BlobStore:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise BlobUrlError("s3 blob URL has an invalid port") from None
    if not parts.hostname:
        raise BlobUrlError("s3 blob URL names no host")
    bucket, _, prefix = parts.path.lstrip("/").partition("/")
    if not bucket:
        raise BlobUrlError("s3 blob URL names no bucket (s3://ACCESS:SECRET@HOST:PORT/BUCKET)")
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(options) - _S3_OPTIONS
    if unknown:
        raise BlobUrlError(f"unknown s3 blob URL options: {sorted(unknown)}")
    access_key = unquote(parts.username) if parts.username else None
    secret_key = unquote(parts.password) if parts.password is not None else None
    if access_key and secret_key is None:
        raise BlobUrlError("s3 blob URL has an access key but no secret")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return S3BlobStore(
        f"{host}:{port}" if port else host,
        access_key,
        secret_key,
        unquote(bucket),
        secure=_flag(options.get("secure", ["true"])[-1]),
        region=options["region"][-1] if "region" in options else None,
        prefix=unquote(prefix),
        max_blob_bytes=max_blob_bytes,
        ca_file=unquote(options["ca_file"][-1]) if "ca_file" in options else None,
    )


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BlobUrlError(f"s3 blob URL option secure must be true or false, not {value!r}")
