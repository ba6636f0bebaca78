"""One runtime with a long queue: accepting into it (``hot``), and loading it cold (``cold``).

One session, the executor ``bench.executors:hold`` (a run that lasts until the worker cancels
it), so that everything after a runtime's first input stays queued. The shard queue is
pre-filled with ``--hot-queued`` prompts (10,000) and then ``--hot-inputs`` more (2,000), all for
one runtime, in order, after the one whose run holds it; one worker takes them all.

``hot``
    The admissions after the first ``--hot-queued`` (``inputs.created_at``, in admission order,
    from the moment the runtime held that many to the last): inputs/s into a runtime that
    already has that many queued. Compared with ``accept`` (the same prompts spread over many
    runtimes) and, in the notes, with the first ``--hot-inputs`` admissions of the same runtime,
    when its queue was still short.
``cold``
    The first worker is stopped; the store then holds the runtime with every input queued (this
    is checked). One more prompt for it is published with direct reply-to and left in its shard
    queue; a fresh worker is started. The figure runs from the moment that worker starts
    consuming (its ``shards_assigned`` log record, written as it registers its consumers: the
    delivery follows at once) to the reply, which the worker sends once it has loaded the
    runtime and committed the admission. A worker loads a runtime with queued work at start-up
    anyway (it resumes work left behind), so this is the wait a producer sees for the first
    accept into such a runtime after a restart. Also reported: from the process start.

Checks: those of every session (each input stored once, in publish order, nothing rejected,
the queues empty after the worker has stopped), a reply ``accepted`` for the probe's input id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.errors import BenchFailure
from bench.latency import ReplyLine, accepted, gather_replies
from bench.report import Row
from bench.scenarios import ALL_INPUTS, described, label
from bench.services import queue_depths
from bench.session import Context, Session, open_session, session_details
from bench.stats import rate_after, rate_of_first
from bench.workerproc import WorkerBuild, event_time
from bench.workload import prompt, runtime_ids
from schemas import InputPhase

HOLD_EXECUTOR = "bench.executors:hold"
SETTINGS = {
    "MEERKAT_EXECUTOR": HOLD_EXECUTOR,
    "MEERKAT_SHUTDOWN_GRACE_SECONDS": "1",  # the held run is cancelled 1 s after SIGTERM
    "MEERKAT_EXECUTOR_TIMEOUT_SECONDS": "86400",
}
CONSUMING = "shards_assigned"
"""The worker's log record written as it starts consuming its shard queues."""


@dataclass(frozen=True)
class HotPlan:
    queued: int
    inputs: int
    hot: bool
    cold: bool


async def run_hot(context: Context, build: WorkerBuild, plan: HotPlan) -> list[Row]:
    runtime = runtime_ids(1)[0]
    # The first input's run holds the runtime; the next ``queued`` wait behind it.
    total = 1 + plan.queued + (plan.inputs if plan.hot else 0)
    messages = [prompt(runtime, index) for index in range(total)]
    rows: list[Row] = []
    async with open_session(context, label(build, "hot"), build, SETTINGS) as session:
        await session.prefill(messages)
        await session.start_worker()
        with session.timed("run"):
            await session.wait("inputs accepted", ALL_INPUTS, len(messages))
        records = await session.database.fetch(
            "SELECT created_at FROM inputs WHERE runtime_id = $1 ORDER BY admission_seq", runtime)
        times = [r["created_at"].timestamp() for r in records]
        await session.stop_worker()
        if plan.hot:
            rows.append(_hot_row(build, times, plan))
        if plan.cold:
            with session.timed("cold"):
                rows.append(await _measure_cold(session, build, runtime, len(messages),
                                                len(messages) - 1))
        report = await session.finish(consumed=False)
        for row in rows:
            row.details.update(session_details(session, report))
    return rows


def _hot_row(build: WorkerBuild, times: list[float], plan: HotPlan) -> Row:
    count, seconds = rate_after(times, 1 + plan.queued)
    if seconds <= 0:
        raise BenchFailure(f"hot: {count} admissions in no time")
    rate = count / seconds
    first = min(plan.inputs, plan.queued)
    note = ""
    details: dict[str, object] = {"queued_before": plan.queued}
    if first >= 1:
        early, early_seconds = rate_of_first(times, first)
        if early_seconds > 0:
            empty = early / early_seconds
            details["rate_short_queue"] = round(empty, 1)
            note = f"{rate / empty:.2f}x the runtime's first {early}"
    return Row(label(build, "hot"),
               described(build, f"worker accept, 1 runtime, {plan.queued} queued"),
               count, seconds, rate, "inputs/s", versus="accept", note=note, details=details)


async def _measure_cold(
    session: Session, build: WorkerBuild, runtime: str, index: int, queued: int
) -> Row:
    held = await session.count(
        "SELECT count(*) FROM inputs WHERE runtime_id = $1 AND phase = $2", runtime,
        InputPhase.QUEUED.value)
    if held < queued:
        raise BenchFailure(f"cold: the runtime holds {held} queued inputs, not {queued}")
    probe = prompt(runtime, index)
    line = ReplyLine(session.connection, session.prefix)
    await line.open()
    try:
        reply = line.expect(probe)
        await line.publish(probe)
        session.published.append(probe)
        waiting = sum((await queue_depths(session.connection,
                                          session.prefix.shard_queues())).values())
        if waiting != 1:
            raise BenchFailure(f"cold: {waiting} messages in the shard queues, not the probe")
        offset = session.log_path.stat().st_size if session.log_path.exists() else 0
        started = time.time()
        await session.start_worker()
        [replied] = await gather_replies([reply], session.context.stall_seconds,
                                         f"the reply to the first input ({session.name})")
    finally:
        await line.close()
    accepted(probe, replied)
    consuming = event_time(session.log_path, CONSUMING, offset)
    since = started if consuming is None else consuming
    seconds = replied.wall - since
    details: dict[str, object] = {
        "queued_inputs": held,
        "start_to_reply_seconds": round(replied.wall - started, 3),
        "start_to_consuming_seconds": None if consuming is None else round(consuming - started, 3),
        "measured_from": "process start" if consuming is None else f"log record {CONSUMING}",
    }
    return Row(label(build, "cold"),
               described(build, f"first accept, cold runtime of {held} queued"),
               held, seconds, 1000 * seconds, "ms",
               note=f"{replied.wall - started:.2f} s from process start", details=details)
