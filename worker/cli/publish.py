"""Building and publishing for the command line, the test suites and the benchmarks.

Everything here comes from the producer client, :mod:`worker.client`: the envelopes are built by
:mod:`worker.client.messages`, published by :mod:`worker.client.wire`. What this module adds
are the command line's two builders, which take the arguments of ``send input`` (image files)
and ``send command`` (a command name, a reason, an input id and an abandon reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

from schemas import CommandEnvelope, InputEnvelope
from worker.client import messages
from worker.client.errors import ExchangeMissing, NoReply, NotConfirmed, UnexpectedReply, Unroutable
from worker.client.messages import image_media_type, message_id_of
from worker.client.wire import (
    DEFAULT_TOPOLOGY,
    JSON,
    PublishRequest,
    PublishTarget,
    amqp_message,
    publish_command,
    publish_confirmed,
    publish_envelope,
    publish_input,
    request_reply,
)

__all__ = [
    "DEFAULT_TOPOLOGY",
    "JSON",
    "ExchangeMissing",
    "NoReply",
    "NotConfirmed",
    "PublishRequest",
    "PublishTarget",
    "UnexpectedReply",
    "Unroutable",
    "amqp_message",
    "build_command",
    "build_prompt",
    "image_media_type",
    "message_id_of",
    "publish_command",
    "publish_confirmed",
    "publish_envelope",
    "publish_input",
    "request_reply",
]


def build_prompt(
    runtime_id: str, text: str, images: Sequence[Path], idempotency_key: str | None = None
) -> InputEnvelope:
    """A durable operator prompt: the text, then each image file inline.

    Raises ``ValueError`` for a file that is not a PNG, JPEG, GIF or WebP image, ``OSError``
    when a file cannot be read.
    """
    return messages.prompt(runtime_id, text, images=images, idempotency_key=idempotency_key)


def build_command(
    runtime_id: str, name: str, reason: str | None = None, input_id: UUID | None = None,
    abandon_reason: str | None = None,
) -> CommandEnvelope:
    """A lifecycle command with a fresh id; ``ValueError`` when the fields do not fit ``name``
    (``input_id`` is for ``abandon_input``, ``abandon_reason`` for ``abandon_pending`` and
    ``abandon_input``, where it defaults to ``cancelled``)."""
    return messages.command(runtime_id, name, reason=reason, input_id=input_id,
                            abandon_reason=abandon_reason)
