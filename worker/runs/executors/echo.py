"""The built-in deterministic executor: it appends each input's text to a transcript.

It stands in for a real agent loop wherever the run machinery itself is under test (and as the
default, so a fresh worker does something visible). The same request always yields the same
result, so a test can predict the session snapshot and the ``run.completed`` data exactly.

Session snapshot: ``{"transcript": [entry, ...]}``, the previous transcript followed by one entry
``{"input_id", "input_type", "text"}`` per input of the batch, in order. The text of an input is
its text content; inline images are described as ``[image <media type> <n> bytes]`` after their
base64 is decoded, which proves the images arrived inline and intact. An external event is
rendered as its event type and its payload as canonical JSON; a continuation as its reason. An
operation input is consumed on accept and never runs, so it adds nothing.

Interrupts: the executor checks ``run.interrupt`` once between two inputs (its only checkpoint)
and stops there if it is set, marking the output ``{"interrupted": true}``. In this simple
executor the inputs it did not reach still count as processed by the run: they are not requeued
and leave no transcript entry.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

from schemas import (
    AnyInput,
    BlobImageBlock,
    ContentBlock,
    ContinuationInput,
    ExternalEventInput,
    InlineImageBlock,
    OperationInput,
    TextBlock,
)
from worker.runs.executors import RunRequest, RunResult

PART_SEPARATOR = " "
"""Between the parts (text blocks, image descriptions) of one input's text."""


async def execute(run: RunRequest) -> RunResult:
    transcript = previous_transcript(run.session)
    texts: list[str] = []
    interrupted = False
    runnable = [item for item in run.inputs if not isinstance(item, OperationInput)]
    for index, item in enumerate(runnable):
        if index > 0 and run.interrupt.is_set():
            interrupted = True
            break
        text = input_text(item)
        transcript.append(
            {"input_id": str(item.header.id), "input_type": item.input_type, "text": text}
        )
        texts.append(text)
    output: dict[str, Any] = {"echo": texts}
    if interrupted:
        output["interrupted"] = True
    return RunResult(
        session={"transcript": transcript}, message_count=len(transcript), output=output
    )


def previous_transcript(session: Mapping[str, Any] | None) -> list[Any]:
    """A copy of the transcript in ``session``; the snapshot of the run before is never changed."""
    if session is None:
        return []
    transcript = session.get("transcript", [])
    if not isinstance(transcript, list):
        # A snapshot written by another executor: refusing it fails the run visibly instead of
        # silently starting a new conversation.
        raise ValueError(f"session 'transcript' must be a list, got {type(transcript).__name__}")
    return list(transcript)


def input_text(item: AnyInput) -> str:
    if isinstance(item, ExternalEventInput):
        payload = json.dumps(item.payload, sort_keys=True, separators=(",", ":"))
        parts = [f"{item.event_type} {payload}", *map(block_text, item.blocks or [])]
        return PART_SEPARATOR.join(parts)
    if isinstance(item, ContinuationInput):
        return item.reason
    if isinstance(item, OperationInput):
        return ""
    return content_text(item.content)


def content_text(content: str | Sequence[ContentBlock]) -> str:
    if isinstance(content, str):
        return content
    return PART_SEPARATOR.join(block_text(block) for block in content)


def block_text(block: ContentBlock) -> str:
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, InlineImageBlock):
        return f"[image {block.media_type} {len(decode_image(block.data))} bytes]"
    if isinstance(block, BlobImageBlock):
        # Images should come back inline; a reference shows that restoring them was skipped.
        return f"[image {block.media_type} {block.blob_id}]"
    raise TypeError(f"unknown content block {type(block).__name__}")


def decode_image(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"inline image is not valid base64: {exc}") from exc
