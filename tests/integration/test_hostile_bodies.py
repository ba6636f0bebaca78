"""A real worker fed hostile bodies between valid prompts of one runtime.

Every hostile body must land in the dead-letter queue at once with its reason in
``x-meerkat-error``; every valid prompt must be accepted and consumed, in order, by a worker
that is still answering afterwards. The bodies are published raw with aio-pika to the ingress
exchange (routing key = the runtime id), as any producer could.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import uuid4

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from schemas import (
    COMMAND_MESSAGE_TYPE,
    INPUT_MESSAGE_TYPE,
    Accepted,
    InputEnvelope,
    InputPhase,
)
from tests.integration.conftest import Stack, StackFactory, new_runtime_id
from worker.cli.dlq import list_dead
from worker.cli.publish import build_prompt
from worker.pipeline.settle import ERROR_HEADER, release

pytestmark = pytest.mark.integration

AT = "2026-11-26T12:00:00Z"


def _input(runtime_id: str, input_id: str, **fields: Any) -> dict[str, Any]:
    header = {"id": input_id, "timestamp": AT, "source": {"type": "operator"},
              "durability": "durable"}
    body = {"input_type": "prompt", "header": header, "content": "x", **fields}
    return {"runtime_id": runtime_id, "input": body}


def _bytes(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def hostile_bodies(runtime_id: str) -> list[tuple[str, bytes, str]]:
    """(input id, body, what its dead letter's reason must say) for each hostile category."""
    cases: list[tuple[str, bytes, str]] = []

    def add(make: Any, expected: str) -> None:
        input_id = str(uuid4())
        cases.append((input_id, make(input_id), expected))

    def with_payload(payload: bytes) -> Any:
        def make(input_id: str) -> bytes:
            document = _input(runtime_id, input_id, input_type="external_event",
                              event_type="x", payload="@")
            del document["input"]["content"]
            return _bytes(document).replace(b'"@"', payload)
        return make

    def with_text(literal: bytes) -> Any:
        return lambda input_id: _bytes(_input(runtime_id, input_id)).replace(b'"x"', literal)

    add(lambda _: b"[" * 5_000 + b"]" * 5_000, "nested deeper than 64 levels")
    add(lambda _: b'{"a":' * 100_000 + b"0" + b"}" * 100_000, "nested deeper than 64 levels")
    add(with_payload(b"[" * 900 + b"]" * 900), "nested deeper than 64 levels")
    add(with_payload(b'{"v":NaN}'), "NaN is not a JSON number")
    add(with_payload(b"[Infinity]"), "Infinity is not a JSON number")
    add(with_payload(b"[-Infinity]"), "-Infinity is not a JSON number")
    add(with_payload(b"[1e999]"), "too large for a double")
    add(lambda i: _bytes(_input(runtime_id, i)).replace(
        b'{"runtime_id":', b'{"runtime_id":"rt:elsewhere","runtime_id":'),
        "duplicate key 'runtime_id' at $")
    add(lambda i: _bytes(_input(runtime_id, i, content=[{"type": "text", "text": "a"}])).replace(
        b'"text":"a"', b'"text":"a","text":"b"'), "duplicate key 'text' at $.input.content[0]")
    add(with_text(b'"\\ud800"'), "lone surrogate escape")
    add(with_text(b'"\xed\xa0\x80"'), "invalid UTF-8")
    add(with_text(b'"caf\xe9"'), "invalid UTF-8")
    add(lambda i: _bytes(_input(runtime_id, i)).replace(f'"{AT}"'.encode(), b"1764158400"),
        "RFC 3339")
    add(lambda i: _bytes(_input(runtime_id, i)).replace(
        b'"durability":"durable"', b'"durability":"durable","idempotency_key":"k\\u0000"'),
        "idempotency_key")
    missing_blob = "sha256:" + "0" * 64
    add(lambda i: _bytes(_input(runtime_id, i, content=[
        {"type": "image", "media_type": "image/png", "source": "blob", "blob_id": missing_blob}])),
        "image_invalid")
    return cases


async def publish_raw(stack: Stack, body: bytes, routing_key: str, message_id: str,
                      message_type: str = INPUT_MESSAGE_TYPE) -> None:
    topology = stack.topology
    name = (topology.commands_exchange if message_type == COMMAND_MESSAGE_TYPE
            else topology.ingress_exchange)
    exchange = await stack.channel.get_exchange(name)
    message = aio_pika.Message(body, message_id=message_id, type=message_type,
                               content_type="application/json",
                               delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    await exchange.publish(message, routing_key=routing_key)


async def dead_reasons(stack: Stack, expected: int) -> dict[str, str]:
    """message id → ``x-meerkat-error`` of the dead queue's messages, left in place.

    Read with the broker client directly rather than ``list_dead``, which decodes each body with
    a recursive JSON parser and so fails on the deepest of these bodies.
    """
    queue = await stack.channel.get_queue(stack.topology.dead_queue, ensure=False)

    async def read() -> dict[str, str]:
        while True:
            held: list[AbstractIncomingMessage] = []
            try:
                while (message := await queue.get(no_ack=False, fail=False)) is not None:
                    held.append(message)
                reasons = {m.message_id or "": str((m.headers or {}).get(ERROR_HEADER))
                           for m in held}
            finally:
                for message in held:
                    await release(message)
            if len(reasons) >= expected:
                return reasons
            await asyncio.sleep(0.05)

    try:
        return await asyncio.wait_for(read(), 30)
    except TimeoutError:
        raise AssertionError(f"expected {expected} dead letters in {queue.name}") from None


async def test_hostile_bodies_are_dead_lettered_and_valid_prompts_are_consumed(
    stack_factory: StackFactory,
) -> None:
    stack: Stack = await stack_factory()
    runtime_id = new_runtime_id()
    hostile = hostile_bodies(runtime_id)
    prompts: list[InputEnvelope] = []
    unknown = new_runtime_id()
    command_id = str(uuid4())
    for index, (input_id, body, _) in enumerate(hostile):
        prompt = build_prompt(runtime_id, f"valid {index}", [])
        prompts.append(prompt)
        await stack.publish(prompt)
        await publish_raw(stack, body, runtime_id, input_id)
    command = {"runtime_id": unknown,
               "command": {"command_type": "destroy", "command_id": command_id}}
    await publish_raw(stack, _bytes(command), unknown, command_id, COMMAND_MESSAGE_TYPE)

    await stack.settled(len(hostile) + len(prompts) + 1)

    reasons = await dead_reasons(stack, len(hostile) + 1)
    for input_id, _, expected in hostile:
        assert expected in reasons[input_id], (expected, reasons[input_id])
    assert "runtime_unknown" in reasons[command_id]
    assert not set(reasons) & {str(p.input.header.id) for p in prompts}
    store = stack.worker.store
    assert store is not None
    stored = {r.input_id: r.phase for r in await store.list_inputs(runtime_id)}
    assert stored == {p.input.header.id: InputPhase.CONSUMED for p in prompts}
    admitted = sorted(await store.list_inputs(runtime_id), key=lambda r: r.admission_seq)
    assert [r.input_id for r in admitted] == [p.input.header.id for p in prompts]
    assert (await store.load_runtime(unknown)).row is None
    assert (await store.load_runtime("rt:elsewhere")).row is None
    # The worker is still there and still deciding.
    reply = await stack.request(build_prompt(runtime_id, "after the storm", []))
    assert isinstance(reply.outcome, Accepted)


async def test_a_body_routed_under_another_runtime_or_message_id_is_dead_lettered(
    stack: Stack,
) -> None:
    runtime_id, elsewhere = new_runtime_id(), new_runtime_id()
    routed_wrong, misnamed = str(uuid4()), str(uuid4())
    await publish_raw(stack, _bytes(_input(elsewhere, routed_wrong)), runtime_id, routed_wrong)
    await publish_raw(stack, _bytes(_input(runtime_id, str(uuid4()))), runtime_id, misnamed)

    await stack.settled(2)

    reasons = await dead_reasons(stack, 2)
    assert f"routing key '{runtime_id}' is not the body's runtime_id" in reasons[routed_wrong]
    assert f"message_id '{misnamed}' is not the input id" in reasons[misnamed]
    store = stack.worker.store
    assert store is not None
    assert (await store.load_runtime(elsewhere)).row is None


async def test_dlq_list_reads_a_deeply_nested_dead_letter(stack: Stack) -> None:
    message_id = str(uuid4())
    await publish_raw(stack, b"[" * 5_000 + b"]" * 5_000, new_runtime_id(), message_id)
    await stack.settled(1)

    [dead] = await list_dead(stack.channel, limit=10, topology=stack.topology)

    assert dead.message_id == message_id
    assert "nested deeper" in (dead.error or "")
