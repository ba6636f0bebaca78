"""``meerkat-worker members`` on a SQLite store: every worker of the deployment with its state,
version, heartbeat age and shards, and the shards no live worker consumes."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from persistence.factory import open_runtime_store
from tests.worker_process import environment, meerkat
from worker.cli.common import EXIT_OK

pytestmark = pytest.mark.unit

QUEUES = [f"meerkat.ingress.{k:02d}" for k in range(4)]


async def _write_rows(tmp_path: Path) -> None:
    store = await open_runtime_store(f"sqlite+aiosqlite:///{tmp_path}/meerkat.db")
    now, ttl = datetime.now(UTC), timedelta(seconds=3)
    try:
        await store.heartbeat_members("alive", now=now, ttl=ttl, group="meerkat",
                                      version="9.9.9", shards=QUEUES[:2])
        await store.heartbeat_members("draining", now=now, ttl=ttl, group="meerkat",
                                      shards=QUEUES[2:3])
        await store.set_leaving("draining")
        await store.heartbeat_members("crashed", now=now - timedelta(hours=2), ttl=ttl,
                                      group="meerkat", shards=QUEUES[3:])
        await store.heartbeat_members("elsewhere", now=now, ttl=ttl, group="other",
                                      shards=QUEUES)
    finally:
        await store.close()


def test_members_lists_the_deployment_s_workers(tmp_path: Path) -> None:
    # A ttl of an hour: the commands' start-up must not age the rows written just before.
    env = environment(shards="4", heartbeat_seconds="1200")
    assert meerkat(["migrate"], env, tmp_path).returncode == EXIT_OK
    asyncio.run(_write_rows(tmp_path))

    done = meerkat(["members", "--json"], env, tmp_path)

    assert done.returncode == EXIT_OK, done.stderr
    report = json.loads(done.stdout)
    rows = {w["worker_id"]: w for w in report["workers"]}
    assert sorted(rows) == ["alive", "crashed", "draining"]
    assert (rows["alive"]["state"], rows["alive"]["version"], rows["alive"]["shards"]) == (
        "live", "9.9.9", QUEUES[:2])
    assert rows["draining"]["state"] == "leaving"
    assert rows["crashed"]["state"] == "gone"
    assert rows["crashed"]["heartbeat_age_seconds"] >= 7200
    assert report["unowned"] == QUEUES[3:], "a gone worker's shards are nobody's"
    assert (report["shards"], report["group"], report["ttl_seconds"]) == (4, "meerkat", 3600.0)

    table = meerkat(["members"], env, tmp_path)
    assert table.returncode == EXIT_OK, table.stderr
    assert "alive" in table.stdout
    assert "2: 00 01" in table.stdout
    assert table.stdout.rstrip().endswith("3 worker(s), 4 shards; unowned: meerkat.ingress.03")
