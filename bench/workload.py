"""The benchmark's messages and how they are published.

Messages are built with the ``schemas`` models and published as the README's wire format says:
UTF-8 JSON, ``content_type: application/json``, persistent, ``type: meerkat.input.v1``,
``message_id`` = input id, routing key = runtime id, to ``<prefix>.ingress``. Publishing waits for
the broker's confirms (``mandatory``, so an unroutable message fails instead of vanishing).
"""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractExchange, DeliveryMode
from pamqp.commands import Basic

from bench.errors import BenchFailure
from schemas import (
    Durability,
    ImageMediaType,
    InlineImageBlock,
    InputEnvelope,
    InputHeader,
    OperatorSource,
    PromptInput,
    TextBlock,
)
from worker.ids import uuid7

INPUT_MESSAGE_TYPE = "meerkat.input.v1"
TARGET_BYTES = 500
"""Size of a message body without an image."""
IMAGE_EVERY = 10
"""One message in this many carries an inline image."""
PUBLISH_WINDOW = 500
"""Publishes awaiting their confirm at once."""


@dataclass(frozen=True)
class Message:
    """One published prompt: what the checks compare the store with."""

    index: int
    """Its place in publish order; per runtime, admission order must be this order."""
    runtime_id: str
    input_id: uuid.UUID
    body: bytes
    has_image: bool
    envelope: InputEnvelope
    """What ``body`` encodes, for the producer client (which serialises it again)."""


def png(seed: int, side: int = 12) -> bytes:
    """A valid RGB PNG of ``side`` x ``side`` pixels whose pixels depend on ``seed``
    (a few hundred bytes; distinct seeds give distinct images, hence distinct blobs)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = bytearray()
    for y in range(side):
        rows.append(0)  # filter type: none
        for x in range(side):
            rows += bytes(((x * 21 + seed) % 256, (y * 21 + seed // 256) % 256, (x * y) % 256))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def _envelope(
    runtime_id: str, input_id: uuid.UUID, text: str, image: bytes | None
) -> InputEnvelope:
    content: list[TextBlock | InlineImageBlock] = [TextBlock(text=text)]
    if image is not None:
        content.append(
            InlineImageBlock(
                media_type=ImageMediaType.PNG, data=base64.b64encode(image).decode("ascii")
            )
        )
    header = InputHeader(
        id=input_id,
        timestamp=datetime.now(UTC),
        source=OperatorSource(),
        durability=Durability.DURABLE,
    )
    return InputEnvelope(
        runtime_id=runtime_id, input=PromptInput(header=header, content=list(content))
    )


def _encoded(envelope: InputEnvelope) -> bytes:
    return envelope.model_dump_json().encode("utf-8")


def prompt(runtime_id: str, index: int, *, images: bool = True) -> Message:
    """Prompt number ``index`` for ``runtime_id``: its text padded so that the body without
    an image is :data:`TARGET_BYTES` long, an inline PNG when ``index`` is a multiple of
    :data:`IMAGE_EVERY`."""
    input_id = uuid7()
    text = f"prompt {index} "
    bare = _encoded(_envelope(runtime_id, input_id, text, None))
    text += "x" * max(0, TARGET_BYTES - len(bare))
    image = png(index) if images and index % IMAGE_EVERY == 0 else None
    envelope = _envelope(runtime_id, input_id, text, image)
    return Message(index, runtime_id, input_id, _encoded(envelope), image is not None, envelope)


def runtime_ids(runtimes: int) -> list[str]:
    """``runtimes`` fresh runtime ids (no other call gives the same)."""
    tag = uuid.uuid4().hex[:12]
    return [f"rt:bench:{tag}:{k}" for k in range(runtimes)]


def prompts(inputs: int, runtimes: int, *, images: bool = True) -> list[Message]:
    """``inputs`` prompts spread round-robin over ``runtimes`` fresh runtime ids."""
    if inputs < 1 or runtimes < 1:
        raise ValueError("need at least one input and one runtime")
    ids = runtime_ids(runtimes)
    return [prompt(ids[index % runtimes], index, images=images) for index in range(inputs)]


def amqp_message(message: Message) -> aio_pika.Message:
    return aio_pika.Message(
        message.body,
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=str(message.input_id),
        type=INPUT_MESSAGE_TYPE,
    )


async def publish_all(exchange: AbstractExchange, messages: Sequence[Message]) -> None:
    """Publish every message with its runtime id as routing key and wait for all confirms, at
    most :data:`PUBLISH_WINDOW` at once. Messages of one runtime are published in index order:
    each window is sent in order on one channel, which the broker keeps.
    """

    async def one(message: Message, routing_key: str) -> None:
        confirm = await exchange.publish(amqp_message(message), routing_key, mandatory=True)
        if not isinstance(confirm, Basic.Ack):
            raise BenchFailure(
                f"the broker did not take message {message.index} "
                f"(routing key {routing_key!r}): {confirm!r}"
            )

    for start in range(0, len(messages), PUBLISH_WINDOW):
        window = messages[start:start + PUBLISH_WINDOW]
        await asyncio.gather(*(one(m, m.runtime_id) for m in window))


async def publish_to_queue(
    channel: aio_pika.abc.AbstractChannel, queue: str, messages: Sequence[Message]
) -> None:
    """Publish through the default exchange straight to ``queue`` (the raw baseline)."""

    async def one(message: Message) -> None:
        confirm = await channel.default_exchange.publish(
            amqp_message(message), queue, mandatory=True
        )
        if not isinstance(confirm, Basic.Ack):
            raise BenchFailure(f"the broker did not take message {message.index}: {confirm!r}")

    for start in range(0, len(messages), PUBLISH_WINDOW):
        await asyncio.gather(*(one(m) for m in messages[start:start + PUBLISH_WINDOW]))
