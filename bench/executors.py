"""Run executors of the benchmark scenarios.

``MEERKAT_EXECUTOR=bench.executors:sleep_one_second`` (``slow``) waits :data:`LATENCY_SECONDS`,
then answers as the echo executor does in shape: the previous transcript followed by one entry
per input, ``message_count`` its length, the input ids as output.

``MEERKAT_EXECUTOR=bench.executors:hold`` (``hot`` and ``cold``) never answers: it waits until
the worker cancels it (at shutdown, after its grace). The first run of a runtime then lasts as
long as the worker, and every input after the first stays queued behind it.

Only the public executor API (``RunRequest``, ``RunResult``) is used.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from worker.runs.executors import RunRequest, RunResult
except ImportError:  # a worker from before the runs package (``python -m bench --baseline``)
    from worker.executors import RunRequest, RunResult  # type: ignore[import-not-found,no-redef]

LATENCY_SECONDS = 1.0


async def sleep_one_second(run: RunRequest) -> RunResult:
    await asyncio.sleep(LATENCY_SECONDS)
    previous = [] if run.session is None else list(run.session.get("transcript", []))
    entries: list[dict[str, Any]] = [
        {"input_id": str(item.header.id), "input_type": item.input_type} for item in run.inputs
    ]
    transcript = previous + entries
    return RunResult(
        session={"transcript": transcript},
        message_count=len(transcript),
        output={"inputs": [entry["input_id"] for entry in entries]},
    )


async def hold(run: RunRequest) -> RunResult:
    await asyncio.Event().wait()  # until cancelled: nothing ever sets it
    raise AssertionError("unreachable")
