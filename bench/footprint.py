"""What the worker keeps: memory per loaded runtime (``memory``), disk per input (``disk``).

``memory``
    A session of its own, the echo executor. The worker starts on empty queues and first takes
    a warm-up burst of the same shape as the one measured: ``--memory-runtimes`` runtimes of
    :data:`INPUTS_PER_RUNTIME` prompts each. Processing a burst needs memory only while it
    lasts (messages in flight, commit windows, the relay's batches), and the allocator keeps
    most of what it once took: without a burst of that size first, the difference would count
    that high-water mark, not what stays. Once every input is consumed and every event sent,
    its resident set (``VmRSS`` of ``/proc/<pid>/status``) is read; then as many new runtimes
    get :data:`INPUTS_PER_RUNTIME` prompts each, and once those are consumed and their events
    sent it is read again. The figure is the difference over the runtimes added: the memory of
    an idle runtime the worker keeps loaded (its cache holds up to
    ``MEERKAT_MAX_CACHED_RUNTIMES``, so twice ``--memory-runtimes`` must fit).
``disk``
    A session of its own, the workload of ``e2e``, with ``MEERKAT_OUTBOX_RETENTION_SECONDS=1``
    and the pruner every second (``MEERKAT_RETENTION_INTERVAL_SECONDS=1``), published once the
    worker runs (nothing here is a rate, and a worker that starts on a large backlog spends its
    start-up consuming it: see ``startup_seconds`` of ``accept``). Once every input is
    consumed, the wait is for the pruner to have deleted every outbox event (the outbox empty:
    a condition, not a delay); the worker is stopped and every table vacuumed, first with a
    plain ``VACUUM (ANALYZE)`` (what autovacuum does: the space of dead rows becomes free for
    reuse, but stays in the files), then with ``VACUUM FULL`` (every file rewritten with the
    live rows only). The figure is the sum of ``pg_total_relation_size`` (heap, indexes, TOAST)
    of the tables after ``VACUUM FULL``, divided by the consumed inputs: what each input keeps
    on disk for as long as it is kept (the dedupe window, seven days by default), during which
    the free space its updates left behind is reused by later inputs. Also reported: the same
    after the plain ``VACUUM`` (the burst's dead space still counted), each table's share, and
    the blob store's bytes per input (the images, kept outside the database).
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.errors import BenchFailure
from bench.report import Row
from bench.scenarios import ALL_INPUTS, CONSUMED_INPUTS, described, label
from bench.session import Context, Session, open_session, session_details
from bench.workerproc import WorkerBuild
from bench.workload import prompts

INPUTS_PER_RUNTIME = 3
UNSENT_EVENTS = "SELECT count(*) FROM event_outbox WHERE sent_at IS NULL"
RETENTION_SETTINGS = {
    "MEERKAT_OUTBOX_RETENTION_SECONDS": "1",
    "MEERKAT_RETENTION_INTERVAL_SECONDS": "1",
}
TABLES = """
SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
ORDER BY c.relname
"""


def resident_bytes(pid: int) -> int:
    """``VmRSS`` of the process, in bytes."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError as exc:
        raise BenchFailure(f"cannot read the worker's /proc/{pid}/status: {exc}") from exc
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            amount, unit = line.split()[1:3]
            if unit != "kB":
                raise BenchFailure(f"VmRSS in {unit!r}, not kB")
            return int(amount) * 1024
    raise BenchFailure(f"no VmRSS in /proc/{pid}/status")


async def settle(session: Session, inputs: int) -> None:
    """Until ``inputs`` are consumed and no event waits in the outbox."""
    await session.wait("inputs consumed", CONSUMED_INPUTS, inputs)
    await session.wait("events sent", UNSENT_EVENTS, 0, falling=True)


async def run_memory(context: Context, build: WorkerBuild, runtimes: int) -> Row:
    warm = prompts(runtimes * INPUTS_PER_RUNTIME, runtimes)
    load = prompts(runtimes * INPUTS_PER_RUNTIME, runtimes)
    name = label(build, "memory")
    async with open_session(context, name, build) as session:
        worker = await session.start_worker()
        await session.publish(warm)
        await settle(session, len(warm))
        before = resident_bytes(worker.pid)
        started = time.monotonic()
        with session.timed("load"):
            await session.publish(load)
            await settle(session, len(warm) + len(load))
        seconds = time.monotonic() - started
        after = resident_bytes(worker.pid)
        report = await session.finish(consumed=True)
        details: dict[str, object] = {
            "rss_before_bytes": before, "rss_after_bytes": after,
            "warm_up_runtimes": runtimes, "inputs_per_runtime": INPUTS_PER_RUNTIME,
            **session_details(session, report),
        }
    per_runtime = (after - before) / runtimes
    return Row(name, described(build, f"RSS per idle loaded runtime ({INPUTS_PER_RUNTIME} "
                                      "inputs each)"),
               runtimes, seconds, per_runtime / 1024, "KiB/runtime",
               note=f"RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB", details=details)


async def table_bytes(session: Session) -> dict[str, int]:
    return {r["name"]: r["bytes"] for r in await session.database.fetch(TABLES)}


async def vacuum(session: Session, tables: list[str], *, full: bool) -> None:
    option = "FULL, ANALYZE" if full else "ANALYZE"
    for table in tables:
        await session.database.execute(f'VACUUM ({option}) "{table}"')


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) \
        if folder.exists() else 0


async def run_disk(context: Context, build: WorkerBuild, inputs: int, runtimes: int) -> Row:
    messages = prompts(inputs, runtimes)
    name = label(build, "disk")
    async with open_session(context, name, build, RETENTION_SETTINGS) as session:
        await session.start_worker()
        with session.timed("run"):
            await session.publish(messages)
            await session.wait("inputs consumed", CONSUMED_INPUTS, len(messages))
        consumed_at = time.monotonic()
        with session.timed("prune"):
            pruned_at = await session.wait("outbox events pruned",
                                           "SELECT count(*) FROM event_outbox", 0, falling=True)
        await session.stop_worker()
        stored = await session.count(ALL_INPUTS)
        with session.timed("vacuum"):
            tables = sorted(await table_bytes(session))
            await vacuum(session, tables, full=False)
            sizes = await table_bytes(session)
            await vacuum(session, tables, full=True)
            compact = await table_bytes(session)
        blobs = folder_bytes(session.blob_folder)
        report = await session.finish(consumed=True)
        details: dict[str, object] = {
            "table_bytes_after_vacuum_full": compact, "table_bytes_after_vacuum": sizes,
            "bytes_per_input_after_vacuum": round(sum(sizes.values()) / stored, 1),
            "blob_bytes": blobs, "blob_bytes_per_input": round(blobs / stored, 1),
            "runtimes": runtimes, "settings": RETENTION_SETTINGS,
            "prune_seconds": round(pruned_at - consumed_at, 2),
            **session_details(session, report),
        }
    total = sum(compact.values())
    return Row(name, described(build, "disk per consumed input, outbox pruned"), stored,
               pruned_at - consumed_at, total / stored, "B/input",
               note=f"{total / 2**20:.1f} MiB in {len(compact)} tables after VACUUM FULL; "
                    f"{sum(sizes.values()) / stored:.0f} B/input after plain VACUUM; "
                    f"blobs {blobs / stored:.0f} B/input",
               details=details)
