"""The example agent against a real worker, through the public test kit and client only."""

from __future__ import annotations

import asyncio
import base64
import uuid

from example_agent.executor import execute

from schemas import Accepted, CommandCompleted
from worker.client import messages
from worker.runs.executors import RunRequest, RunResult
from worker.testing import WorkerFactory, within

# A 1x1 PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def runtime() -> str:
    return f"rt:example:{uuid.uuid4()}"


async def test_a_prompt_with_an_image_reaches_the_executor(meerkat_worker: WorkerFactory) -> None:
    worker = await meerkat_worker()
    runtime_id = runtime()

    outcome = await worker.request(messages.prompt(runtime_id, "what is this", images=[PIXEL]))

    assert isinstance(outcome, Accepted)
    completed = await worker.wait_for_event("run.completed", runtime_id=runtime_id)
    [seen] = completed.data["output"]["inputs"]
    assert seen["input_id"] == str(outcome.input_id)
    assert seen["words"] == 3
    assert seen["images"] == [{"media_type": "image/png", "bytes": len(PIXEL)}]


async def test_a_command_reports_what_it_changed(meerkat_worker: WorkerFactory) -> None:
    worker = await meerkat_worker()
    runtime_id = runtime()
    await worker.request(messages.prompt(runtime_id, "hello"))
    await worker.run_until_idle()

    report = await worker.request(messages.retire(runtime_id, reason="end of the example"))

    assert isinstance(report, CommandCompleted)
    assert report.state.value == "retired"
    assert report.report.inputs_pending_drain == 0
    event = await worker.wait_for_event("command.completed", runtime_id=runtime_id)
    assert event.data["command_type"] == "retire"


async def test_a_poison_message_ends_in_the_dead_letter_queue(
    meerkat_worker: WorkerFactory,
) -> None:
    worker = await meerkat_worker()

    await worker.publish_raw(b"{this is not json", routing_key="rt:poison",
                             message_id=str(uuid.uuid4()))

    tapped = await worker.wait_for_dead_letter()
    await worker.run_until_idle()
    [dead] = await worker.dead_letters()
    assert dead.message_id == tapped.message_id
    assert dead.routing_key == "rt:poison"
    assert "not UTF-8 JSON" in (dead.error or "")


async def test_a_run_cut_by_a_restart_completes(meerkat_worker: WorkerFactory) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def held_until_released(run: RunRequest) -> RunResult:
        entered.set()
        await release.wait()
        return await execute(run)

    worker = await meerkat_worker(held_until_released, shutdown_grace_seconds=0.5)
    runtime_id = runtime()
    await worker.prompt(runtime_id, "keep going after a restart")
    await worker.wait_for_event("run.started", runtime_id=runtime_id)
    await within(30, "the executor to be entered", entered.wait())

    await worker.stop()
    release.set()
    await worker.restart()

    completed = await worker.wait_for_event("run.completed", runtime_id=runtime_id)
    assert completed.data["output"]["turn"] == 1
    await worker.run_until_idle()
    state = await worker.inspect(runtime_id)
    assert state["inputs_by_phase"] == {"consumed": 1}
