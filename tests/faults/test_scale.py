"""Scale out and in under load, with real worker processes, judged by the history checker.

Three workers share 16 shards while 10,000 prompts over 200 runtimes stream in at 150 a
second. A quarter of the way in, one worker is SIGKILLed and a fourth is started, as an
orchestrator replaces a pod; two thirds in, one worker is scaled down (SIGTERM). Then:

- ``verify``: every input accepted and consumed exactly once, per-runtime order kept;
- every shard of the killed worker had a consumer again within :data:`CRASH_BOUND` seconds of
  the kill (the heartbeat ttl plus one heartbeat, with the defaults), every shard of the worker
  scaled down within :data:`LEAVE_BOUND` (watched from the broker, :class:`ShardWatch`);
- after each change the assignment is balanced (``meerkat-worker members``): 6/5/5 of 16 over
  three workers, 8/8 over the two left at the end.

The figures (throughput, hand-over times, version conflicts) are printed at the end of the
session and written to ``.faults/scale.md``.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.faults.conftest import RunFactory
from tests.faults.harness import FaultRun
from tests.faults.scale import (
    ShardWatch,
    balanced,
    members,
    record,
    shards_of,
    version_conflicts,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.scale]

SHARDS = 16
RUNTIMES = 200
INPUTS = 10_000
PER_SECOND = 150.0
LANES = 8
"""Runtimes published to at once (each runtime's messages one at a time, in order)."""
KILL_AT = INPUTS // 4
SCALE_DOWN_AT = 2 * INPUTS // 3
CRASH_BOUND = 5.0
"""A SIGKILLed worker's shards have a consumer again within this many seconds (defaults:
heartbeat 1 s, ttl 3 s; takeover at most ttl + 1 heartbeat after its last heartbeat)."""
LEAVE_BOUND = 1.0
"""A worker scaled down gracefully hands each shard over within this many seconds."""
BALANCE_SECONDS = 30.0
RUN_SECONDS = 600.0


async def wait_balanced(run: FaultRun, workers: int) -> dict[str, object]:
    """Until ``members`` shows ``workers`` live workers sharing every shard evenly."""
    deadline = time.monotonic() + BALANCE_SECONDS
    while True:
        report = await asyncio.to_thread(members, run.env, run.directory)
        if balanced(report, workers):
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {BALANCE_SECONDS:g}s waiting for {workers} "
                                 f"workers to share the shards evenly; members says {report}")
        await asyncio.sleep(0.5)


def _summary(times: dict[str, float]) -> str:
    values = sorted(times.values())
    return (f"max {values[-1]:.2f} s, median {values[len(values) // 2]:.2f} s over "
            f"{len(values)} shards" if values else "no shard")


async def test_scale_out_and_in_under_load(fault_run: RunFactory) -> None:
    async with fault_run("scale", 1, "scale", shards=SHARDS, in_table=False,
                         runtimes=RUNTIMES, run_seconds=RUN_SECONDS) as run:
        workers = [run.start_worker() for _ in range(3)]
        await asyncio.gather(*(run.ready(w) for w in workers))
        await wait_balanced(run, 3)
        watch = ShardWatch(run.amqp_url, run.topology)
        await watch.start()
        try:
            started = time.monotonic()
            run.stream(run.prompts(INPUTS), per_second=PER_SECOND, lanes=LANES)

            await run.wait_published(KILL_AT)
            victim = workers[1]
            victim_shards = shards_of(await asyncio.to_thread(members, run.env, run.directory),
                                      victim.log_path)
            run.expect_exit(victim)
            killed_at = time.monotonic()
            await asyncio.to_thread(victim.kill)
            run.note(f"SIGKILLed {victim.name} ({len(victim_shards)} shards); starting a 4th")
            joiner = run.start_worker()
            await run.ready(joiner)
            await wait_balanced(run, 3)
            run.note("balanced over three again")

            await run.wait_published(SCALE_DOWN_AT)
            leaving = workers[2]
            leaving_shards = shards_of(
                await asyncio.to_thread(members, run.env, run.directory), leaving.log_path)
            run.expect_exit(leaving)
            stopped_at = time.monotonic()
            leaving.process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(leaving.process.wait, 60)
            drained = time.monotonic() - stopped_at
            run.note(f"{leaving.name} exited {exit_code} {drained:.2f}s after SIGTERM")
            await wait_balanced(run, 2)

            finished = await run.wait()
            seconds = time.monotonic() - started
        finally:
            await watch.close()
        crash = watch.handover_seconds(killed_at, victim_shards)
        leave = watch.handover_seconds(stopped_at, leaving_shards)
        conflicts = version_conflicts(w.log_path for w in run.workers)
        figures = [
            f"{run.finished()} of {INPUTS} inputs over {RUNTIMES} runtimes and {SHARDS} shards "
            f"finished in {seconds:.1f} s: {run.finished() / seconds:.0f} inputs/s end to end "
            f"(published at {PER_SECOND:g}/s)",
            f"SIGKILL of {victim.name}: its shards consumed again after {_summary(crash)}",
            f"SIGTERM of {leaving.name}: exit {exit_code} after {drained:.2f} s; its shards "
            f"consumed again after {_summary(leave)}",
            f"version conflicts: {conflicts} (commit_failed with VersionConflict in the logs)",
        ]
        record("scale: 3 workers, SIGKILL + join, then a scale-down", figures)
        problems = run.outcome.problems
        if exit_code != 0:
            problems.append(f"{leaving.name} exited {exit_code} after SIGTERM")
        late = {s: t for s, t in crash.items() if t > CRASH_BOUND}
        if late:
            problems.append(f"after the SIGKILL, shards without a consumer for longer than "
                            f"{CRASH_BOUND:g} s: {late}")
        slow = {s: t for s, t in leave.items() if t > LEAVE_BOUND}
        if slow:
            problems.append(f"after the SIGTERM, shards without a consumer for longer than "
                            f"{LEAVE_BOUND:g} s: {slow}")
        if not finished:
            problems.append("the traffic did not finish (see above)")
        await run.conclude()

