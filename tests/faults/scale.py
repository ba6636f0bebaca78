"""What the scale and cluster tests watch besides the history: shard consumers, members, figures.

:class:`ShardWatch` polls the consumer count of every shard queue (a passive declare, every
:data:`POLL_SECONDS`) from the test's own connection, so a shard without any consumer is seen
from the broker's side, whatever the workers believe. After an event (a kill, a SIGTERM) the
hand-over time of a shard is how long after the event it had a consumer again, if it lost
every consumer at all: a graceful hand-over whose standby was subscribed before the old owner
let go never shows a shard without one.

:func:`members` runs ``meerkat-worker members --json`` with a run's settings, as an operator
would. :func:`version_conflicts` counts the ``commit_failed`` lines of the worker logs whose
error is a ``VersionConflict`` (a killed worker's ``/metrics`` are gone with it; its log is
not). The figures each test prints are collected in :data:`FIGURES`, printed at the end of the
session by ``tests/faults/conftest.py`` and written to ``.faults/scale.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection

from tests.faults.report import REPORT_DIR
from worker.topology import Topology

POLL_SECONDS = 0.1
MEMBERS_SECONDS = 60.0
FIGURES: list[tuple[str, list[str]]] = []
"""(test, lines) for the session's summary."""
FIGURES_FILE = REPORT_DIR / "scale.md"


class ShardWatch:
    def __init__(self, amqp_url: str, topology: Topology) -> None:
        self.amqp_url = amqp_url
        self.topology = topology
        self.samples: dict[str, list[tuple[float, int]]] = {q: [] for q in topology.queue_names()}
        self._connection: AbstractConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                if self._connection is None or self._connection.is_closed:
                    self._connection = await aio_pika.connect(self.amqp_url)
                channel = await self._connection.channel()
                while True:
                    for name, samples in self.samples.items():
                        declared = await channel.declare_queue(name, passive=True)
                        count = declared.declaration_result.consumer_count or 0
                        samples.append((time.monotonic(), count))
                    await asyncio.sleep(POLL_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:  # a broker node went away: poll again on a new connection
                self._connection = None
                await asyncio.sleep(POLL_SECONDS)

    def handover_seconds(self, since: float, shards: Iterable[str]) -> dict[str, float]:
        """Shard -> seconds after ``since`` until it had a consumer again, for each of
        ``shards`` that had none at some moment after ``since`` (0.0 for those that always
        had one)."""
        times: dict[str, float] = {}
        for shard in shards:
            lost, back = None, None
            for at, count in self.samples[shard]:
                if at < since:
                    continue
                if count == 0 and lost is None:
                    lost = at
                elif count > 0 and lost is not None:
                    back = at
                    break
            if lost is None:
                times[shard] = 0.0
            else:
                times[shard] = (back if back is not None else float("inf")) - since
        return times

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()


def members(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """``meerkat-worker members --json`` with ``env``."""
    result = subprocess.run([sys.executable, "-m", "worker", "members", "--json"], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=MEMBERS_SECONDS,
                            check=False)
    if result.returncode != 0:
        raise AssertionError(f"members exited {result.returncode}: {result.stderr.strip()}")
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def balanced(report: dict[str, Any], workers: int) -> bool:
    """``workers`` live workers, none leaving or gone, each with floor or ceil of the shards,
    and no shard unowned."""
    rows = report["workers"]
    if len(rows) != workers or any(r["state"] != "live" for r in rows) or report["unowned"]:
        return False
    floor, larger = divmod(report["shards"], workers)
    counts = sorted(len(r["shards"]) for r in rows)
    return counts == [floor] * (workers - larger) + [floor + 1] * larger


def shards_of(report: dict[str, Any], worker_log: Path) -> list[str]:
    """The shards of the worker whose log is ``worker_log`` (its id is in its first lines)."""
    text = worker_log.read_text(errors="replace")
    for row in report["workers"]:
        if row["worker_id"] in text:
            return list(row["shards"])
    raise AssertionError(f"no member of {[r['worker_id'] for r in report['workers']]} "
                         f"is named in {worker_log}")


def version_conflicts(logs: Iterable[Path]) -> int:
    count = 0
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"commit_failed"' in line and "VersionConflict" in line:
                count += 1
    return count


def record(test: str, lines: list[str]) -> None:
    FIGURES.append((test, lines))
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text("".join(f"## {name}\n\n" + "".join(f"- {line}\n" for line in body)
                                    + "\n" for name, body in FIGURES))
