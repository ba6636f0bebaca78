"""End to end through the real broker: a prompt with an image is accepted, run and consumed.

Runs on the test kit's fixtures (``meerkat_worker``), as a user's suite would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from persistence.codec import blob_ids_of
from schemas import (
    Accepted,
    BlobImageBlock,
    CommandCompleted,
    Deduplicated,
    EventEnvelope,
    InlineImageBlock,
    InputPhase,
    PromptInput,
)
from tests.integration.conftest import new_runtime_id
from worker.client import messages
from worker.testing import WorkerFactory, WorkerHarness

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(meerkat_worker: WorkerFactory) -> WorkerHarness:
    """A worker with the echo executor on this test's own deployment."""
    return await meerkat_worker()


async def test_prompt_with_image_is_accepted_run_and_consumed(
    harness: WorkerHarness, png_file: Path
) -> None:
    runtime_id = new_runtime_id()
    envelope = messages.prompt(runtime_id, "describe this", images=[png_file],
                               idempotency_key="k-1")

    outcome = await harness.request(envelope)

    assert isinstance(outcome, Accepted)
    assert outcome.input_id == envelope.input.header.id
    input_id = envelope.input.header.id
    await harness.wait_for_event("input.consumed",
                                 where=lambda e: e.data["input_id"] == str(input_id))
    completed = await harness.wait_for_event("run.completed", runtime_id=runtime_id)
    assert "[image image/png" in completed.data["output"]["echo"][0]
    codes = harness.codes(runtime_id)
    for code in ("input.accepted", "input.queued", "run.started", "input.staged",
                 "input.applied", "input.consumed", "run.completed"):
        assert code in codes
    worker = harness.worker
    assert worker is not None
    assert worker.store is not None
    stored = await worker.store.get_input(runtime_id, input_id)
    assert stored is not None
    assert stored.phase is InputPhase.CONSUMED
    assert isinstance(stored.payload, PromptInput)
    assert not any(isinstance(b, InlineImageBlock) for b in stored.payload.content)
    blob_ids = blob_ids_of(stored)
    assert len(blob_ids) == 1
    assert any(isinstance(b, BlobImageBlock) for b in stored.payload.content)
    assert worker.blobs is not None
    assert await worker.blobs.exists(blob_ids[0])


async def test_the_same_message_published_twice_is_applied_once(harness: WorkerHarness) -> None:
    runtime_id = new_runtime_id()
    envelope = messages.prompt(runtime_id, "once")

    first = await harness.request(envelope)
    second = await harness.request(envelope)

    assert isinstance(first, Accepted)
    assert isinstance(second, Deduplicated)
    assert second.existing_id == envelope.input.header.id
    await harness.run_until_idle()
    report = await harness.inspect(runtime_id)
    assert [i["input_id"] for i in report["inputs"]] == [str(envelope.input.header.id)]
    assert len(report["receipts"]) == 1


async def test_an_idempotency_key_dedupes_a_different_message(harness: WorkerHarness) -> None:
    runtime_id = new_runtime_id()
    first = await harness.request(messages.prompt(runtime_id, "a", idempotency_key="same"))
    second = await harness.request(messages.prompt(runtime_id, "b", idempotency_key="same"))
    assert isinstance(first, Accepted)
    assert isinstance(second, Deduplicated)
    assert second.existing_id == first.input_id


async def test_every_command_answers_with_its_report(harness: WorkerHarness) -> None:
    runtime_id = new_runtime_id()
    await harness.request(messages.prompt(runtime_id, "hello"))
    await harness.run_until_idle()

    expectations = [
        ("retire", "retired", {"inputs_abandoned": 0, "inputs_pending_drain": 0}),
        ("reset", "idle", {"inputs_abandoned": 0}),
        ("abandon_pending", "idle", {"inputs_abandoned": 0}),
        ("recycle", "idle", {"inputs_transferred": 0}),
        ("stop", "stopped", {"inputs_abandoned": 0}),
        ("resume", "idle", {}),
        ("destroy", "destroyed", {"inputs_abandoned": 0}),
    ]
    for name, state, report in expectations:
        outcome = await harness.request(messages.command(runtime_id, name))
        assert isinstance(outcome, CommandCompleted), (name, outcome)
        assert outcome.state.value == state, name
        assert outcome.report.model_dump(exclude_none=True) == report, name
        await harness.wait_for_event("command.completed", runtime_id=runtime_id,
                                     where=_command_type(name))


def _command_type(name: str) -> Callable[[EventEnvelope], bool]:
    def matches(event: EventEnvelope) -> bool:
        return bool(event.data["command_type"] == name)

    return matches


async def test_metrics_count_what_the_worker_did(harness: WorkerHarness) -> None:
    runtime_id = new_runtime_id()
    await harness.request(messages.prompt(runtime_id, "counted"))
    await harness.run_until_idle()
    assert harness.worker is not None
    metrics = harness.worker.metrics
    registry = metrics.registry
    assert registry.get_sample_value("meerkat_messages_received_total", {"kind": "input"}) == 1
    assert registry.get_sample_value("meerkat_messages_acked_total") == 1
    assert registry.get_sample_value("meerkat_runs_completed_total") == 1
    outbox_published = registry.get_sample_value("meerkat_outbox_published_total")
    assert outbox_published is not None
    assert outbox_published >= 7  # accepted, queued, started, staged, applied, consumed, ...
    text = metrics.render().decode()
    assert "meerkat_runtimes_cached 1.0" in text
