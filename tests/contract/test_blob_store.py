"""One contract for every blob store: memory, file system and S3 (MinIO or moto) behave alike."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio

from persistence.blobs import (
    DEFAULT_MAX_BLOB_BYTES,
    FileBlobStore,
    MemoryBlobStore,
    S3BlobStore,
    collect_garbage,
    open_blob_store,
)
from persistence.errors import (
    BlobCorrupt,
    BlobNotFound,
    BlobTooLarge,
    InvalidBlobId,
    StoreUnavailable,
)
from persistence.ports import BlobStore, StoredBlob
from schemas.validation import blob_id_for
from tests.fixtures.s3 import S3Server, new_s3_blob_store, unique_bucket_name

KNOWN_MEDIA_TYPE = "image/png"
KNOWN_DATA = "iVBORw0KGgo="
KNOWN_ID = "sha256:37ecc430eadc708f3fbefa16496b3303baced1942eb4ca298422a5b90d1b8f2d"
KNOWN_HEX = KNOWN_ID.removeprefix("sha256:")

FAR_PAST = datetime(2000, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)

INVALID_IDS = [
    "sha256:../../etc",
    "sha256:" + "../" * 21 + "x",
    "sha256:" + KNOWN_HEX.upper(),
    "sha256:" + KNOWN_HEX[:63],
    "sha256:" + KNOWN_HEX + "0",
    "sha256:" + KNOWN_HEX + "\n",
    "sha256:" + "g" * 64,
    "SHA256:" + KNOWN_HEX,
    "md5:" + KNOWN_HEX[:32],
    KNOWN_HEX,
    "",
]

StoreFactory = Callable[..., BlobStore]

STORE_KINDS = [
    pytest.param("memory", marks=pytest.mark.unit),
    pytest.param("filesystem", marks=pytest.mark.unit),
    pytest.param("s3", marks=pytest.mark.integration),
]


def png(seed: int, size: int = 16) -> str:
    """Base64 of a distinct PNG-looking image of ``size`` bytes."""
    header = b"\x89PNG\r\n\x1a\n"
    body = seed.to_bytes(8, "big") * (size // 8 + 1)
    return base64.b64encode((header + body)[:size]).decode()


def tree(root: Path) -> list[str]:
    """Every path under ``root``, relative to it: a leftover temporary file would show here."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.fixture(params=STORE_KINDS)
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    kind: str = request.param
    server: S3Server | None = request.getfixturevalue("s3_server") if kind == "s3" else None
    opened: list[BlobStore] = []

    def factory(max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> BlobStore:
        store: BlobStore
        if kind == "memory":
            store = MemoryBlobStore(max_blob_bytes)
        elif kind == "filesystem":
            store = FileBlobStore(tmp_path / f"blobs-{len(opened)}", max_blob_bytes)
        else:
            assert server is not None
            store = new_s3_blob_store(server, max_blob_bytes=max_blob_bytes)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
def blob_store(make_store: StoreFactory) -> BlobStore:
    return make_store()


async def test_put_returns_the_content_address(blob_store: BlobStore) -> None:
    assert await blob_store.put_image(KNOWN_MEDIA_TYPE, KNOWN_DATA) == KNOWN_ID


async def test_put_is_idempotent(blob_store: BlobStore) -> None:
    first = await blob_store.put_image("image/png", png(1))
    second = await blob_store.put_image("image/png", png(1))

    assert first == second == blob_id_for("image/png", png(1))
    assert [info.blob_id for info in await blob_store.list_blobs()] == [first]


async def test_concurrent_puts_of_one_blob_leave_one_whole_blob(blob_store: BlobStore) -> None:
    data = png(8, size=4096)
    ids = await asyncio.gather(*(blob_store.put_image("image/png", data) for _ in range(8)))

    assert set(ids) == {blob_id_for("image/png", data)}
    assert [info.blob_id for info in await blob_store.list_blobs()] == [ids[0]]
    assert (await blob_store.get(ids[0])).data_base64 == data


async def test_get_round_trips_exactly(blob_store: BlobStore) -> None:
    data = png(2, size=300)
    blob_id = await blob_store.put_image("image/png", data)

    assert await blob_store.get(blob_id) == StoredBlob(blob_id, "image/png", data)


async def test_media_type_spelling_does_not_change_the_blob(blob_store: BlobStore) -> None:
    blob_id = await blob_store.put_image(" IMAGE/PNG ", KNOWN_DATA)

    assert blob_id == KNOWN_ID
    assert (await blob_store.get(blob_id)).media_type == "image/png"


async def test_get_of_a_missing_blob_raises_not_found(blob_store: BlobStore) -> None:
    with pytest.raises(BlobNotFound) as raised:
        await blob_store.get(KNOWN_ID)
    assert raised.value.blob_id == KNOWN_ID


@pytest.mark.parametrize("blob_id", INVALID_IDS)
async def test_non_canonical_ids_are_refused(blob_store: BlobStore, blob_id: str) -> None:
    with pytest.raises(InvalidBlobId):
        await blob_store.get(blob_id)
    with pytest.raises(InvalidBlobId):
        await blob_store.exists(blob_id)
    with pytest.raises(InvalidBlobId):
        await blob_store.delete(blob_id)


async def test_size_limit_is_enforced_on_put(make_store: StoreFactory) -> None:
    store = make_store(max_blob_bytes=16)

    assert await store.put_image("image/png", png(3, size=16)) == blob_id_for(
        "image/png", png(3, size=16)
    )
    with pytest.raises(BlobTooLarge) as raised:
        await store.put_image("image/png", png(4, size=17))
    assert (raised.value.size, raised.value.limit) == (17, 16)
    assert len(await store.list_blobs()) == 1


async def test_exists_and_delete_are_idempotent(blob_store: BlobStore) -> None:
    blob_id = await blob_store.put_image("image/png", png(5))
    assert await blob_store.exists(blob_id)

    await blob_store.delete(blob_id)
    await blob_store.delete(blob_id)
    await blob_store.delete(KNOWN_ID)  # never stored

    assert not await blob_store.exists(blob_id)
    with pytest.raises(BlobNotFound):
        await blob_store.get(blob_id)


async def test_exists_says_no_only_for_a_blob_never_stored(blob_store: BlobStore) -> None:
    stored = await blob_store.put_image("image/png", png(10))

    assert await blob_store.exists(stored)
    assert not await blob_store.exists(KNOWN_ID)


async def test_list_blobs_names_every_blob(blob_store: BlobStore) -> None:
    assert await blob_store.list_blobs() == []
    ids = {await blob_store.put_image("image/png", png(seed)) for seed in range(3)}

    listed = await blob_store.list_blobs()

    assert {info.blob_id for info in listed} == ids
    assert all(info.size > 0 for info in listed)
    assert all(info.modified_at.tzinfo is not None for info in listed)


async def test_gc_removes_only_unreferenced_old_blobs(blob_store: BlobStore) -> None:
    kept, orphan_a, orphan_b = [await blob_store.put_image("image/png", png(s)) for s in range(3)]

    removed = await collect_garbage(blob_store, {kept}, older_than=FAR_FUTURE, dry_run=False)

    assert removed == sorted([orphan_a, orphan_b])
    assert [info.blob_id for info in await blob_store.list_blobs()] == [kept]


async def test_gc_spares_young_blobs(blob_store: BlobStore) -> None:
    blob_id = await blob_store.put_image("image/png", png(6))

    assert await collect_garbage(blob_store, set(), older_than=FAR_PAST, dry_run=False) == []
    assert await blob_store.exists(blob_id)


async def test_gc_dry_run_removes_nothing(blob_store: BlobStore) -> None:
    ids = sorted([await blob_store.put_image("image/png", png(s)) for s in range(2)])

    assert await collect_garbage(blob_store, set(), older_than=FAR_FUTURE, dry_run=True) == ids
    assert sorted(info.blob_id for info in await blob_store.list_blobs()) == ids


async def test_ping_answers(blob_store: BlobStore) -> None:
    await blob_store.ping()


# --- memory ---------------------------------------------------------------------------------


@pytest.mark.unit
async def test_gc_uses_the_time_of_the_last_put() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    now = [start]
    store = MemoryBlobStore(clock=lambda: now[0])
    old = await store.put_image("image/png", png(1))
    refreshed = await store.put_image("image/png", png(2))
    now[0] = start + timedelta(hours=2)
    young = await store.put_image("image/png", png(3))
    await store.put_image("image/png", png(2))  # a retry refreshes the blob

    removed = await collect_garbage(
        store, set(), older_than=start + timedelta(hours=1), dry_run=False
    )

    assert removed == [old]
    assert {info.blob_id for info in await store.list_blobs()} == {refreshed, young}


@pytest.mark.unit
async def test_gc_refuses_a_naive_cut_off() -> None:
    with pytest.raises(ValueError, match="time zone"):
        await collect_garbage(MemoryBlobStore(), set(), older_than=datetime(2026, 1, 1),
                              dry_run=True)


# --- file system ----------------------------------------------------------------------------


@pytest.mark.unit
async def test_file_layout_is_sharded_json(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    await store.put_image(KNOWN_MEDIA_TYPE, KNOWN_DATA)

    path = tmp_path / KNOWN_HEX[:2] / f"{KNOWN_HEX}.json"
    assert store.path_for(KNOWN_ID) == path
    assert json.loads(path.read_bytes()) == {"media_type": "image/png", "data": KNOWN_DATA}
    assert tree(tmp_path) == sorted([KNOWN_HEX[:2], f"{KNOWN_HEX[:2]}/{path.name}"])
    await asyncio.gather(*(store.put_image(KNOWN_MEDIA_TYPE, KNOWN_DATA) for _ in range(4)))
    assert tree(tmp_path) == sorted([KNOWN_HEX[:2], f"{KNOWN_HEX[:2]}/{path.name}"])


@pytest.mark.unit
async def test_stray_files_are_not_blobs(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    blob_id = await store.put_image("image/png", png(1))
    shard = store.path_for(blob_id).parent
    (shard / ".tmp-crashed.part").write_bytes(b'{"media_type":')
    (tmp_path / "zz").mkdir()
    (tmp_path / "zz" / f"{'0' * 64}.json").write_text("{}")
    (tmp_path / "ab").mkdir(exist_ok=True)
    (tmp_path / "ab" / f"{'cd' * 32}.json").write_text("{}")  # wrong shard
    (tmp_path / "notes.txt").write_text("hello")

    assert [info.blob_id for info in await store.list_blobs()] == [blob_id]


@pytest.mark.unit
@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01 not json",
        b"[1, 2]",
        b'{"media_type": "image/png"}',
        json.dumps({"media_type": "image/png", "data": png(99)}).encode(),
        json.dumps({"media_type": "image/gif", "data": KNOWN_DATA}).encode(),
    ],
)
async def test_a_corrupt_file_is_reported(tmp_path: Path, content: bytes) -> None:
    store = FileBlobStore(tmp_path)
    await store.put_image(KNOWN_MEDIA_TYPE, KNOWN_DATA)
    store.path_for(KNOWN_ID).write_bytes(content)

    with pytest.raises(BlobCorrupt):
        await store.get(KNOWN_ID)


@pytest.mark.unit
async def test_file_mtime_drives_gc(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    old = await store.put_image("image/png", png(1))
    young = await store.put_image("image/png", png(2))
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).timestamp()
    os.utime(store.path_for(old), (two_days_ago, two_days_ago))

    cut_off = datetime.now(UTC) - timedelta(days=1)
    assert await collect_garbage(store, set(), older_than=cut_off, dry_run=False) == [old]
    assert await store.exists(young)


@pytest.mark.unit
async def test_an_unusable_directory_is_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "a-file"
    root.write_text("not a directory")
    store = FileBlobStore(root)

    with pytest.raises(StoreUnavailable):
        await store.put_image("image/png", png(1))
    with pytest.raises(StoreUnavailable):
        await store.ping()


@pytest.mark.unit
async def test_exists_on_an_unusable_directory_is_unavailable_not_missing(tmp_path: Path) -> None:
    # Admission refuses an input for good when its blob is missing: a store that cannot look
    # must say so (transient), or an outage would turn into permanent rejections.
    root = tmp_path / "a-file"
    root.write_text("not a directory")
    store = FileBlobStore(root)

    with pytest.raises(StoreUnavailable):
        await store.exists(KNOWN_ID)
    with pytest.raises(StoreUnavailable):
        await store.get(KNOWN_ID)


# --- S3 ---------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_s3_store_opened_from_its_url(s3_url: str, s3_endpoint: str) -> None:
    store = open_blob_store(s3_url)
    try:
        blob_id = await store.put_image(KNOWN_MEDIA_TYPE, KNOWN_DATA)
        blob = await store.get(blob_id)
    finally:
        await store.close()

    assert isinstance(store, S3BlobStore)
    assert store.endpoint == s3_endpoint
    assert blob == StoredBlob(KNOWN_ID, KNOWN_MEDIA_TYPE, KNOWN_DATA)


@pytest.mark.integration
async def test_s3_object_layout(s3_server: S3Server) -> None:
    bucket = unique_bucket_name()
    store = open_blob_store(s3_server.url(bucket + "/tenant-a"))
    try:
        blob_id = await store.put_image(KNOWN_MEDIA_TYPE, KNOWN_DATA)
    finally:
        await store.close()
    client = Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False)

    stat = client.stat_object(bucket, f"tenant-a/images/{KNOWN_HEX}")
    response = client.get_object(bucket, f"tenant-a/images/{KNOWN_HEX}")
    try:
        body = json.loads(response.read())
    finally:
        response.close()
        response.release_conn()
    assert blob_id == KNOWN_ID
    assert stat.content_type == "application/json"
    assert body == {"media_type": "image/png", "data": KNOWN_DATA}


@pytest.mark.integration
async def test_s3_corrupt_object_is_reported(
    s3_blob_store: S3BlobStore, s3_server: S3Server
) -> None:
    await s3_blob_store.put_image(KNOWN_MEDIA_TYPE, KNOWN_DATA)
    client = Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False)
    tampered = json.dumps({"media_type": "image/png", "data": png(7)}).encode()
    client.put_object(s3_blob_store.bucket, s3_blob_store.key_for(KNOWN_ID),
                      io.BytesIO(tampered), len(tampered))

    with pytest.raises(BlobCorrupt):
        await s3_blob_store.get(KNOWN_ID)


@pytest.mark.unit
async def test_unreachable_s3_is_unavailable_and_keeps_the_secret() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = open_blob_store(f"s3://key:top%2Fsecret@127.0.0.1:{port}/bucket?secure=false")
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await store.put_image("image/png", png(1))
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        await store.close()

    assert "top/secret" not in str(raised.value)
    assert "top/secret" not in repr(store)


@pytest.mark.unit
async def test_exists_on_unreachable_s3_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = open_blob_store(f"s3://key:secret@127.0.0.1:{port}/bucket?secure=false")
    try:
        with pytest.raises(StoreUnavailable):
            await store.exists(KNOWN_ID)
    finally:
        await store.close()


@pytest.mark.integration
async def test_exists_with_the_bucket_gone_is_unavailable_not_missing(
    s3_blob_store: S3BlobStore, s3_server: S3Server
) -> None:
    blob_id = await s3_blob_store.put_image(KNOWN_MEDIA_TYPE, KNOWN_DATA)
    client = Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False)
    client.remove_object(s3_blob_store.bucket, s3_blob_store.key_for(blob_id))
    client.remove_bucket(s3_blob_store.bucket)

    # S3 answers a HEAD for an object in a missing bucket with a bare 404, like a missing object.
    with pytest.raises(StoreUnavailable, match="bucket"):
        await s3_blob_store.exists(blob_id)
    # The next call makes the bucket again, and then the blob is simply not there.
    assert not await s3_blob_store.exists(blob_id)
