"""``meerkat-worker members``: the workers of the deployment, their shards, heartbeat age, version.

Reads the heartbeat rows of the deployment's group (``MEERKAT_TOPOLOGY_PREFIX``) and nothing
else: the shards shown are those each worker said it consumed at its last heartbeat, so the
listing is at most a heartbeat behind. A row older than the heartbeat ttl
(3 ``MEERKAT_HEARTBEAT_SECONDS``; set it as the workers do) belongs to a worker that is gone
but that no live worker has forgotten yet; it is shown with the state ``gone`` and its shards
count as unowned. A worker draining after SIGTERM is ``leaving``. Every shard queue of
``MEERKAT_SHARDS`` that no live worker consumes is listed under ``unowned``.

A table on standard output (rich), or with ``--json`` one document::

    {"group": str, "shards": int, "ttl_seconds": float, "unowned": [queue, ...],
     "workers": [{"worker_id", "state", "version", "heartbeat_age_seconds", "shards": [...]}]}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from persistence.ports import MemberRow, MembershipStore
from worker.cli.common import EXIT_OK
from worker.cli.store_commands import open_written_store
from worker.config import Settings
from worker.membership import MISSED_HEARTBEATS
from worker.topology import Topology

EVERY_ROW = timedelta(days=36500)
"""The age bound used to read every row of the group, gone ones included."""


def cmd_members(args: argparse.Namespace, settings: Settings) -> int:
    report = asyncio.run(_members(settings))
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    width = None if sys.stdout.isatty() else 160
    Console(width=width).print(members_table(report))
    unowned = report["unowned"]
    print(f"{len(report['workers'])} worker(s), {report['shards']} shards"
          + (f"; unowned: {', '.join(unowned)}" if unowned else "; every shard consumed"))
    return EXIT_OK


async def _members(settings: Settings) -> dict[str, Any]:
    store = await open_written_store(settings)
    try:
        return await members_report(store, settings, datetime.now(UTC))
    finally:
        await store.close()


async def members_report(store: MembershipStore, settings: Settings, now: datetime
                         ) -> dict[str, Any]:
    """What ``members`` shows, as plain JSON-ready data."""
    topology = Topology.from_settings(settings)
    ttl = timedelta(seconds=settings.heartbeat_seconds * MISSED_HEARTBEATS)
    rows = await store.members(topology.prefix, now=now, ttl=EVERY_ROW)
    workers = [_worker(row, now, ttl) for row in rows]
    consumed = {shard for w, row in zip(workers, rows, strict=True) if w["state"] != "gone"
                for shard in row.shards}
    return {
        "group": topology.prefix,
        "shards": topology.shards,
        "ttl_seconds": ttl.total_seconds(),
        "unowned": [q for q in topology.queue_names() if q not in consumed],
        "workers": workers,
    }


def _worker(row: MemberRow, now: datetime, ttl: timedelta) -> dict[str, Any]:
    age = now - row.last_seen
    state = "gone" if age > ttl else "leaving" if row.leaving else "live"
    return {"worker_id": row.worker_id, "state": state, "version": row.version or "-",
            "heartbeat_age_seconds": round(max(age.total_seconds(), 0.0), 3),
            "shards": list(row.shards)}


def members_table(report: dict[str, Any]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("WORKER", "STATE", "VERSION", "HEARTBEAT AGE", "SHARDS"):
        table.add_column(column, overflow="fold")
    prefix = f"{report['group']}.ingress."
    for worker in report["workers"]:
        shards = [s.removeprefix(prefix) for s in worker["shards"]]
        table.add_row(worker["worker_id"], worker["state"], worker["version"],
                      f"{worker['heartbeat_age_seconds']:.1f}s",
                      f"{len(shards)}: {' '.join(shards)}" if shards else "0")
    return table
