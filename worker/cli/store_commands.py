"""The store commands of the command line: ``migrate``, ``inspect`` and ``blobs gc``.

Each ``cmd_*`` handler has the :data:`worker.cli.common.Handler` signature and opens the store
(and, for ``blobs gc``, the blob store) named by the settings for the one command. ``inspect``
and ``blobs gc`` only read what a worker wrote: they open an existing database whose schema is
at head and never make one (a SQLite file missing is a configuration error, exit code 2; a
schema not migrated, exit code 1). ``inspect`` of a runtime the store does not hold exits 6.
``blobs gc`` shows its progress on a terminal (:mod:`worker.cli.progress`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from persistence.blobs import collect_garbage, open_blob_store
from persistence.codec import encode_input
from persistence.factory import open_runtime_store
from persistence.migrate import Migration, upgrade
from persistence.ports import RuntimeStore
from worker.cli.common import EXIT_NOT_FOUND, EXIT_OK
from worker.cli.progress import progress_bar
from worker.config import Settings


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    print(describe_migration(upgrade(settings.database_url.get_secret_value())))
    return EXIT_OK


def describe_migration(migration: Migration) -> str:
    if migration.after is None:
        return "an in-memory store has no schema: nothing to migrate"
    if not migration.applied:
        return f"database schema already at {migration.after}"
    return (f"applied {len(migration.applied)} revision(s): {', '.join(migration.applied)}; "
            f"database schema at {migration.after}")


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    report = asyncio.run(_inspect(settings, args.runtime))
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print(render_inspection(report))
    return EXIT_OK if report["exists"] else EXIT_NOT_FOUND


async def open_written_store(settings: Settings) -> RuntimeStore:
    """The store a worker wrote: it must exist, with its schema at head."""
    return await open_runtime_store(settings.database_url.get_secret_value(), existing=True,
                                    require_schema=True)


async def _inspect(settings: Settings, runtime_id: str) -> dict[str, Any]:
    store = await open_written_store(settings)
    try:
        return await inspection(store, runtime_id)
    finally:
        await store.close()


async def inspection(store: RuntimeStore, runtime_id: str) -> dict[str, Any]:
    """Everything ``inspect`` shows, as plain JSON-ready data."""
    stored = await store.load_runtime(runtime_id)
    inputs = await store.list_inputs(runtime_id)
    receipts = await store.list_receipts(runtime_id, limit=5)
    events = await store.list_events(runtime_id, limit=10)
    row = stored.row
    return {
        "runtime_id": runtime_id,
        "exists": row is not None,
        "state": row.phase.value if row else None,
        "version": row.version if row else 0,
        "current_run_id": str(row.current_run_id) if row and row.current_run_id else None,
        "inputs_by_phase": dict(Counter(r.phase.value for r in inputs)),
        "inputs": [
            {k: v for k, v in encode_input(r).items() if k not in ("payload", "history")}
            for r in inputs
        ],
        "receipts": [
            {"run_id": str(r.run_id), "sequence": r.sequence,
             "inputs": [str(i) for i in r.contributing_input_ids],
             "message_count": r.message_count, "at": r.committed_at.isoformat()}
            for r in receipts
        ],
        "events": [
            {"at": e.at.isoformat(), "code": e.code.value, "event_id": str(e.event_id)}
            for e in events
        ],
    }


def render_inspection(report: dict[str, Any]) -> str:
    if not report["exists"]:
        return f"runtime {report['runtime_id']}: not found"
    lines = [
        f"runtime  {report['runtime_id']}",
        f"state    {report['state']}  (version {report['version']})",
    ]
    if report["current_run_id"]:
        lines.append(f"run      {report['current_run_id']}")
    phases = ", ".join(f"{k}={v}" for k, v in sorted(report["inputs_by_phase"].items()))
    lines += [f"inputs   {phases or 'none'}", "", "INPUT ID                              "
              "KIND                    PHASE                        LANE   SEQ  TRIES"]
    for item in report["inputs"][-20:]:
        lines.append(
            f"{item['input_id']:<38}{item['kind']:<24}{item['phase']:<29}{item['lane']:<7}"
            f"{item['admission_seq']:<5}{item['attempt_count']}"
        )
    if report["receipts"]:
        lines += ["", "LAST RECEIPTS"]
        lines += [f"  {r['at']}  run {r['run_id']}  seq {r['sequence']}  "
                  f"{len(r['inputs'])} input(s), {r['message_count']} message(s)"
                  for r in report["receipts"]]
    if report["events"]:
        lines += ["", "LAST EVENTS"]
        lines += [f"  {e['at']}  {e['code']}" for e in report["events"]]
    return "\n".join(lines)


def cmd_blobs_gc(args: argparse.Namespace, settings: Settings) -> int:
    removed = asyncio.run(_blobs_gc(settings, args.grace, args.dry_run))
    verb = "would remove" if args.dry_run else "removed"
    for blob_id in removed:
        print(blob_id)
    print(f"{verb} {len(removed)} unreferenced blob(s)")
    return EXIT_OK


async def _blobs_gc(settings: Settings, grace: timedelta, dry_run: bool) -> list[str]:
    older_than = datetime.now(UTC) - grace
    store = await open_written_store(settings)
    blobs = open_blob_store(settings.blob_url.get_secret_value())
    try:
        # A blob put for a commit still in flight is younger than the grace period, so it
        # survives even though the references were read before it was committed.
        referenced = await store.referenced_blob_ids()
        with progress_bar("deleting blobs") as progress:
            return await collect_garbage(blobs, referenced, older_than=older_than,
                                         dry_run=dry_run, progress=progress)
    finally:
        await store.close()
        await blobs.close()
