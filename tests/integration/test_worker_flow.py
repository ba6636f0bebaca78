"""End to end through the real broker: a prompt with an image is accepted, run and consumed."""

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
from tests.integration.conftest import Stack, new_runtime_id
from worker.cli.publish import build_command, build_prompt

pytestmark = pytest.mark.integration


async def test_prompt_with_image_is_accepted_run_and_consumed(
    stack: Stack, png_file: Path
) -> None:
    runtime_id = new_runtime_id()
    envelope = build_prompt(runtime_id, "describe this", [png_file], idempotency_key="k-1")

    reply = await stack.request(envelope)

    assert isinstance(reply.outcome, Accepted)
    assert reply.outcome.input_id == envelope.input.header.id
    input_id = envelope.input.header.id
    await stack.wait_for_event(
        lambda e: e.code.value == "input.consumed" and e.data["input_id"] == str(input_id)
    )
    completed = await stack.wait_for_event(
        lambda e: e.code.value == "run.completed" and e.runtime_id == runtime_id
    )
    assert "[image image/png" in completed.data["output"]["echo"][0]
    codes = stack.codes(runtime_id)
    for code in ("input.accepted", "input.queued", "run.started", "input.staged",
                 "input.applied", "input.consumed", "run.completed"):
        assert code in codes
    store = stack.worker.store
    assert store is not None
    stored = await store.get_input(runtime_id, input_id)
    assert stored is not None
    assert stored.phase is InputPhase.CONSUMED
    assert isinstance(stored.payload, PromptInput)
    assert not any(isinstance(b, InlineImageBlock) for b in stored.payload.content)
    blob_ids = blob_ids_of(stored)
    assert len(blob_ids) == 1
    assert any(isinstance(b, BlobImageBlock) for b in stored.payload.content)
    assert stack.worker.blobs is not None
    assert await stack.worker.blobs.exists(blob_ids[0])


async def test_the_same_message_published_twice_is_applied_once(stack: Stack) -> None:
    runtime_id = new_runtime_id()
    envelope = build_prompt(runtime_id, "once", [])

    first = await stack.request(envelope)
    second = await stack.request(envelope)

    assert isinstance(first.outcome, Accepted)
    assert isinstance(second.outcome, Deduplicated)
    assert second.outcome.existing_id == envelope.input.header.id
    await stack.settled(2)
    store = stack.worker.store
    assert store is not None
    inputs = await store.list_inputs(runtime_id)
    assert [r.input_id for r in inputs] == [envelope.input.header.id]
    receipts = await store.list_receipts(runtime_id)
    assert len(receipts) == 1


async def test_an_idempotency_key_dedupes_a_different_message(stack: Stack) -> None:
    runtime_id = new_runtime_id()
    first = await stack.request(build_prompt(runtime_id, "a", [], idempotency_key="same"))
    second = await stack.request(build_prompt(runtime_id, "b", [], idempotency_key="same"))
    assert isinstance(first.outcome, Accepted)
    assert isinstance(second.outcome, Deduplicated)
    assert second.outcome.existing_id == first.outcome.input_id


async def test_every_command_answers_with_its_report(stack: Stack) -> None:
    runtime_id = new_runtime_id()
    await stack.request(build_prompt(runtime_id, "hello", []))
    await stack.settled(1)

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
        reply = await stack.request(build_command(runtime_id, name))
        assert isinstance(reply.outcome, CommandCompleted), (name, reply.outcome)
        assert reply.outcome.state.value == state, name
        assert reply.outcome.report.model_dump(exclude_none=True) == report, name
        await stack.wait_for_event(_command_completed(runtime_id, name))


def _command_completed(runtime_id: str, name: str) -> Callable[[EventEnvelope], bool]:
    def matches(event: EventEnvelope) -> bool:
        return (
            event.code.value == "command.completed"
            and event.data["command_type"] == name
            and event.runtime_id == runtime_id
        )

    return matches


async def test_metrics_count_what_the_worker_did(stack: Stack) -> None:
    runtime_id = new_runtime_id()
    await stack.request(build_prompt(runtime_id, "counted", []))
    await stack.settled(1)
    registry = stack.worker.metrics.registry
    assert registry.get_sample_value("meerkat_messages_received_total", {"kind": "input"}) == 1
    assert registry.get_sample_value("meerkat_messages_acked_total") == 1
    assert registry.get_sample_value("meerkat_runs_completed_total") == 1
    outbox_published = registry.get_sample_value("meerkat_outbox_published_total")
    assert outbox_published is not None
    assert outbox_published >= 7  # accepted, queued, started, staged, applied, consumed, ...
    text = stack.worker.metrics.render().decode()
    assert "meerkat_runtimes_cached 1.0" in text
