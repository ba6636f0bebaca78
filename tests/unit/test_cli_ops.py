"""``migrate``, ``inspect`` and ``blobs gc`` through the command line, on SQLite and files."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from persistence.blobs import FileBlobStore
from persistence.factory import open_runtime_store
from persistence.migrate import alembic_config
from tests.unit.images import b64, png_bytes
from worker.cli.common import EXIT_OK
from worker.cli.main import main
from worker.cli.publish import build_prompt
from worker.driver import RuntimeDriver

pytestmark = pytest.mark.unit


@pytest.fixture
def local_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/meerkat.db"
    blobs = tmp_path / "blobs"
    monkeypatch.setenv("MEERKAT_DATABASE_URL", database_url)
    monkeypatch.setenv("MEERKAT_BLOB_URL", f"file://{blobs}")
    monkeypatch.chdir(tmp_path)  # no stray .env
    return database_url, blobs


def _accept_prompt_with_image(database_url: str, blobs: Path, runtime_id: str) -> None:
    async def accept() -> None:
        store = await open_runtime_store(database_url)
        try:
            driver = RuntimeDriver(store, FileBlobStore(blobs))
            picture = blobs.parent / "pixel.png"
            picture.write_bytes(png_bytes())
            envelope = build_prompt(runtime_id, "hello", [picture])
            async with driver.transaction() as transaction:
                await transaction.accept_input(runtime_id, envelope.input)
                await transaction.commit()
        finally:
            await store.close()

    asyncio.run(accept())


def test_migrate_then_inspect_shows_the_runtime(
    local_settings: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    database_url, blobs = local_settings
    assert main(["migrate"]) == EXIT_OK
    assert main(["migrate"]) == EXIT_OK  # idempotent
    _accept_prompt_with_image(database_url, blobs, "rt:cli")
    capsys.readouterr()

    assert main(["inspect", "rt:cli", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["state"] == "idle"
    assert report["inputs_by_phase"] == {"queued": 1}
    assert [e["code"] for e in report["events"]][-1] == "runtime.state_changed"

    assert main(["inspect", "rt:cli"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "state    idle" in text
    assert "queued" in text


def test_blobs_gc_removes_only_old_unreferenced_blobs(
    local_settings: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    database_url, blobs = local_settings
    assert main(["migrate"]) == EXIT_OK
    _accept_prompt_with_image(database_url, blobs, "rt:gc")
    store = FileBlobStore(blobs)
    orphan = asyncio.run(store.put_image("image/png", b64(png_bytes(width=2))))
    young = asyncio.run(store.put_image("image/png", b64(png_bytes(width=3))))
    referenced = [p for p in blobs.rglob("*.json")
                  if p.stem not in (orphan.split(":")[1], young.split(":")[1])]
    old = time.time() - 3 * 24 * 3600
    for path in [store.path_for(orphan), *referenced]:
        os.utime(path, (old, old))
    capsys.readouterr()

    assert main(["blobs", "gc", "--grace", "24h", "--dry-run"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [orphan, "would remove 1 unreferenced blob(s)"]
    assert asyncio.run(store.exists(orphan))

    assert main(["blobs", "gc", "--grace", "24h"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [orphan, "removed 1 unreferenced blob(s)"]
    assert not asyncio.run(store.exists(orphan))
    assert asyncio.run(store.exists(young))
    assert len(referenced) == 1
    assert all(path.exists() for path in referenced)


def test_migrate_says_what_it_applied(
    local_settings: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    revisions = [r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()]

    assert main(["migrate"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        f"applied {len(revisions)} revision(s): {', '.join(reversed(revisions))}; "
        f"database schema at {head}"
    ]

    assert main(["migrate"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [f"database schema already at {head}"]
