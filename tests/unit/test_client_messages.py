"""The producer client's builders and wire format: every input kind and every command, as the
worker would read them (the schemas, the admission rules, the message properties)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from uuid import UUID

import pytest

from schemas import (
    COMMAND_MESSAGE_TYPE,
    COMMAND_TYPES,
    INPUT_MESSAGE_TYPE,
    CommandEnvelope,
    Durability,
    ImageMediaType,
    InlineImageBlock,
    InputEnvelope,
    PeerRequest,
    PeerResponseTerminal,
    SystemSource,
    TextBlock,
    input_kind,
    validate_input,
)
from tests.unit.images import IMAGE_BYTES, png_bytes
from worker.client import messages
from worker.client.wire import amqp_message, exchange_of
from worker.topology import Topology

pytestmark = pytest.mark.unit

RUNTIME = "rt:client"


def every_input_kind() -> list[InputEnvelope]:
    return [
        messages.prompt(RUNTIME, "hello", images=[png_bytes()], idempotency_key="k-1"),
        messages.peer(RUNTIME, "hi", peer_id="agent-2"),
        messages.peer(RUNTIME, "please", peer_id="agent-2",
                      convention=PeerRequest(request_id="r-1", intent="summarise")),
        messages.peer(RUNTIME, "done", peer_id="agent-2",
                      convention=PeerResponseTerminal(request_id="r-1", status="completed")),
        messages.flow_step(RUNTIME, "step", flow_id="f-1", step_index=0, step_id="s-0"),
        messages.external_event(RUNTIME, "build.finished", {"ok": True}, source_name="ci",
                                text="green"),
        messages.continuation(RUNTIME, "resume pending work"),
        messages.operation(RUNTIME, "op-1", {"progress": 50}),
    ]


@pytest.mark.parametrize("envelope", every_input_kind(), ids=lambda e: input_kind(e.input).value)
def test_every_input_kind_reads_back_and_passes_admission(envelope: InputEnvelope) -> None:
    again = InputEnvelope.model_validate_json(envelope.model_dump_json())
    assert again == envelope
    validate_input(again.input)
    assert again.input.header.id.version == 7
    assert again.input.header.durability is Durability.DURABLE


def test_each_kind_has_its_own_source() -> None:
    sources = [e.input.header.source.type for e in every_input_kind()]
    assert sources == ["operator", "peer", "peer", "peer", "flow", "external", "system",
                       "system"]


def test_a_prompt_carries_its_text_then_its_images(tmp_path: Path) -> None:
    gif = tmp_path / "pixel.gif"
    gif.write_bytes(IMAGE_BYTES[ImageMediaType.GIF])
    envelope = messages.prompt(RUNTIME, "look", images=[png_bytes(), gif])
    assert envelope.input.input_type == "prompt"
    assert isinstance(envelope.input.content, list)
    text, first, second = envelope.input.content
    assert text == TextBlock(text="look")
    assert isinstance(first, InlineImageBlock)
    assert isinstance(second, InlineImageBlock)
    assert first.media_type is ImageMediaType.PNG
    assert second.media_type is ImageMediaType.GIF
    assert base64.b64decode(second.data) == gif.read_bytes()


def test_a_file_that_is_no_image_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(ValueError, match="not a PNG, JPEG, GIF or WebP image"):
        messages.prompt(RUNTIME, "x", images=[notes])


def test_a_header_of_ones_own_replaces_the_default() -> None:
    header = messages.new_header(source=SystemSource(), durability=Durability.DERIVED,
                                 correlation_id="c-1")
    envelope = messages.continuation(RUNTIME, "go on", header=header)
    assert envelope.input.header == header
    validate_input(envelope.input)


def test_a_bad_field_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="runtime_id"):
        messages.prompt("not a runtime id!", "x")
    with pytest.raises(ValueError, match="step_index"):
        messages.flow_step(RUNTIME, "x", flow_id="f", step_index=-1, step_id="s")


def test_every_command_has_a_builder() -> None:
    target = UUID("01900000-0000-7000-8000-000000000001")
    built = [
        messages.retire(RUNTIME, abandon_pending=True, reason="done"),
        messages.reset(RUNTIME),
        messages.stop(RUNTIME),
        messages.resume(RUNTIME),
        messages.destroy(RUNTIME),
        messages.recycle(RUNTIME),
        messages.abandon_pending(RUNTIME, abandon_reason="never_executed"),
        messages.abandon_input(RUNTIME, target),
        messages.cancel_run(RUNTIME),
    ]
    assert tuple(e.command.command_type for e in built) == COMMAND_TYPES
    for envelope in built:
        assert CommandEnvelope.model_validate_json(envelope.model_dump_json()) == envelope
    assert built[0].command.model_dump()["abandon_pending"] is True
    assert built[7].command.model_dump()["input_id"] == target


def test_a_command_by_name_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="input_id"):
        messages.command(RUNTIME, "abandon_input")
    with pytest.raises(ValueError, match="not a valid launch command"):
        messages.command(RUNTIME, "launch")


def test_the_abandon_reason_goes_on_the_commands_that_have_one() -> None:
    target = UUID("01900000-0000-7000-8000-000000000002")
    assert messages.abandon_input(RUNTIME, target).command.model_dump()["abandon_reason"] == (
        "cancelled")
    by_name = messages.command(RUNTIME, "abandon_input", input_id=target,
                               abandon_reason="stopped")
    assert by_name.command.model_dump()["abandon_reason"] == "stopped"
    with pytest.raises(ValueError, match="abandon_reason"):
        messages.command(RUNTIME, "retire", abandon_reason="stopped")
    with pytest.raises(ValueError, match="abandon_reason"):
        messages.abandon_pending(RUNTIME, abandon_reason="bored")


def test_the_amqp_message_of_an_input() -> None:
    envelope = messages.prompt(RUNTIME, "hello")
    message = amqp_message(envelope, reply_to="amq.rabbitmq.reply-to", correlation_id="c",
                           user_id="ignored-on-inputs")
    assert json.loads(message.body) == json.loads(envelope.model_dump_json())
    assert message.content_type == "application/json"
    assert message.delivery_mode == 2
    assert message.message_id == str(envelope.input.header.id)
    assert message.type == INPUT_MESSAGE_TYPE
    assert (message.reply_to, message.correlation_id) == ("amq.rabbitmq.reply-to", "c")
    assert message.user_id is None
    assert exchange_of(envelope, Topology(prefix="acme")) == "acme.ingress"


def test_the_amqp_message_of_a_command() -> None:
    envelope = messages.stop(RUNTIME)
    message = amqp_message(envelope, user_id="ops")
    assert message.message_id == messages.message_id_of(envelope)
    assert message.type == COMMAND_MESSAGE_TYPE
    assert message.user_id == "ops"
    assert exchange_of(envelope, Topology(prefix="acme")) == "acme.commands"
