"""Addressing blobs: content ids of images, blob store URLs, and the collector's grace period."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest

from persistence.blobs import (
    BlobUrlError,
    DurationError,
    FileBlobStore,
    MemoryBlobStore,
    S3BlobStore,
    blob_digest,
    open_blob_store,
    parse_duration,
    redact_blob_url,
)
from persistence.blobs.envelope import decode_envelope, decoded_size, encode_envelope
from persistence.errors import BlobCorrupt, InvalidBlobId
from schemas.validation import blob_id_for

pytestmark = pytest.mark.unit

KNOWN_ID = "sha256:37ecc430eadc708f3fbefa16496b3303baced1942eb4ca298422a5b90d1b8f2d"


def test_known_answer() -> None:
    assert blob_id_for("image/png", "iVBORw0KGgo=") == KNOWN_ID


def test_address_is_sha256_of_media_type_zero_byte_and_base64_text() -> None:
    expected = hashlib.sha256(b"image/png\x00iVBORw0KGgo=").hexdigest()
    assert blob_id_for("image/png", "iVBORw0KGgo=") == "sha256:" + expected


@pytest.mark.parametrize("spelling", ["IMAGE/PNG", "Image/Png", " image/png", "image/png\t"])
def test_media_type_is_lower_cased(spelling: str) -> None:
    assert blob_id_for(spelling, "iVBORw0KGgo=") == KNOWN_ID


def test_the_exact_base64_text_is_addressed() -> None:
    # Same bytes, different text (no padding): a different blob, because the text is stored.
    assert blob_id_for("image/png", "iVBORw0KGgo") != KNOWN_ID


def test_the_zero_byte_separates_media_type_from_data() -> None:
    assert blob_id_for("image/pn", "giVBORw0KGgo=") != blob_id_for("image/png", "iVBORw0KGgo=")


def test_canonical_id_yields_its_digest() -> None:
    assert blob_digest(KNOWN_ID) == KNOWN_ID.removeprefix("sha256:")


@pytest.mark.parametrize(
    "blob_id",
    ["sha256:../../etc", KNOWN_ID.upper(), KNOWN_ID[:-1], KNOWN_ID + "a", KNOWN_ID + "\n", None],
)
def test_non_canonical_ids_are_refused(blob_id: object) -> None:
    with pytest.raises(InvalidBlobId):
        blob_digest(blob_id)


@pytest.mark.parametrize(
    ("data", "size"), [("", 0), ("AA==", 1), ("AAA=", 2), ("AAAA", 3), ("iVBORw0KGgo=", 8)]
)
def test_decoded_size(data: str, size: int) -> None:
    assert decoded_size(data) == size


def test_envelope_round_trips_and_checks_its_address() -> None:
    envelope = encode_envelope("IMAGE/PNG", "iVBORw0KGgo=")

    blob = decode_envelope(KNOWN_ID, envelope)

    assert (blob.blob_id, blob.media_type, blob.data_base64) == (
        KNOWN_ID,
        "image/png",
        "iVBORw0KGgo=",
    )
    with pytest.raises(BlobCorrupt):
        decode_envelope("sha256:" + "0" * 64, envelope)


# --- opening a store from its URL -------------------------------------------------------------


def test_open_memory_and_file_stores() -> None:
    memory = open_blob_store("memory://", max_blob_bytes=10)
    relative = open_blob_store("file://./blobs")
    absolute = open_blob_store("file:///var/lib/meerkat/blobs")

    assert isinstance(memory, MemoryBlobStore)
    assert memory.max_blob_bytes == 10
    assert isinstance(relative, FileBlobStore)
    assert relative.root == Path("blobs")
    assert isinstance(absolute, FileBlobStore)
    assert absolute.root == Path("/var/lib/meerkat/blobs")


def test_open_s3_store_decodes_the_url() -> None:
    store = open_blob_store("s3://AK%2B1:s%2Fe%40cr%3At@minio:9000/images-bucket/a/b?secure=false")

    assert isinstance(store, S3BlobStore)
    assert (store.endpoint, store.bucket, store.secure) == ("minio:9000", "images-bucket", False)
    assert store.key_prefix == "a/b/images/"
    # The SDK client holds the only copy of the credentials.
    provider = store._client._provider
    assert provider is not None
    credentials = provider.retrieve()
    assert (credentials.access_key, credentials.secret_key) == ("AK+1", "s/e@cr:t")
    assert "s/e@cr:t" not in repr(store)
    assert "s%2Fe" not in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "s3://key:hunter2@host:9000",
        "s3://key:hunter2@host:9000/bucket?secure=maybe",
        "s3://key:hunter2@host:9000/bucket?sekure=false",
        "s3://key:hunter2@host:port/bucket",
        "file://",
    ],
)
def test_bad_urls_are_refused_without_the_secret(url: str) -> None:
    with pytest.raises(BlobUrlError) as raised:
        open_blob_store(url)
    assert "hunter2" not in str(raised.value)


def test_redact_blob_url() -> None:
    assert (
        redact_blob_url("s3://key:hunter2@host:9000/bucket?secure=false")
        == "s3://key:***@host:9000/bucket?secure=false"
    )
    assert redact_blob_url("file://./blobs") == "file://./blobs"


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 24H ", timedelta(hours=24)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "1.5h", "24 h", "1y", "h24"])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)
