"""Admission validation rules of DOMAIN.md §2, as typed rejections.

Structure is enforced by the pydantic models; these are the rules that depend on several fields
at once, on sizes, or on the bytes of an image. Each failed rule raises :class:`InputRejected`
carrying the reject reason that goes on the wire.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from schemas.content import BlobImageBlock, ContentBlock, ImageMediaType, InlineImageBlock
from schemas.inputs import (
    ContinuationInput,
    Durability,
    ExternalEventInput,
    FlowStepInput,
    OperationInput,
    PeerInput,
    PeerRequest,
    PeerResponseProgress,
    PeerResponseTerminal,
    PromptInput,
)
from schemas.outcomes import (
    DurabilityViolation,
    ImageInvalid,
    PayloadInvalid,
    PeerHandlingModeInvalid,
    PeerResponseTerminalInvalid,
    RejectReason,
    TooLarge,
)
from schemas.states import InputKind

MiB = 1024 * 1024

AnyInput = (
    PromptInput
    | PeerInput
    | FlowStepInput
    | ExternalEventInput
    | ContinuationInput
    | OperationInput
)


class InputRejected(Exception):
    """An input broke a validation rule; ``reason`` is the wire rejection."""

    def __init__(self, reason: RejectReason) -> None:
        super().__init__(reason.model_dump_json())
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 8 * MiB
    max_image_bytes: int = 5 * MiB
    max_images: int = 16
    max_json_depth: int = 64
    """Deepest nesting of arrays and objects a message may have (checked before parsing)."""


DEFAULT_LIMITS = Limits()

_MAGIC: dict[ImageMediaType, tuple[bytes, ...]] = {
    ImageMediaType.PNG: (b"\x89PNG\r\n\x1a\n",),
    ImageMediaType.JPEG: (b"\xff\xd8\xff",),
    ImageMediaType.GIF: (b"GIF87a", b"GIF89a"),
}


def input_kind(item: AnyInput) -> InputKind:
    """The kind used for policy: peer inputs take it from their convention."""
    if isinstance(item, PeerInput):
        convention = item.convention
        if isinstance(convention, PeerRequest):
            return InputKind.PEER_REQUEST
        if isinstance(convention, PeerResponseProgress):
            return InputKind.PEER_RESPONSE_PROGRESS
        if isinstance(convention, PeerResponseTerminal):
            return InputKind.PEER_RESPONSE_TERMINAL
        return InputKind.PEER_MESSAGE
    return InputKind(item.input_type)


_DERIVED_KINDS = frozenset(
    {
        InputKind.EXTERNAL_EVENT,
        InputKind.PEER_RESPONSE_PROGRESS,
        InputKind.CONTINUATION,
        InputKind.OPERATION,
    }
)


def blob_id_for(media_type: str, data_base64: str) -> str:
    """Content address of an image: sha256 over (media type, a zero byte, the exact base64)."""
    digest = hashlib.sha256()
    digest.update(media_type.strip().lower().encode())
    digest.update(b"\x00")
    digest.update(data_base64.encode())
    return "sha256:" + digest.hexdigest()


def content_blocks(item: AnyInput) -> Iterator[ContentBlock]:
    """Every content block an input carries (where images may live)."""
    if isinstance(item, PromptInput | PeerInput | FlowStepInput):
        if not isinstance(item.content, str):
            yield from item.content
    elif isinstance(item, ExternalEventInput) and item.blocks:
        yield from item.blocks


def decode_image(block: InlineImageBlock, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Decode and check one inline image: base64, size, magic number of its media type."""
    encoded_max = (limits.max_image_bytes + 2) // 3 * 4
    if len(block.data) > encoded_max + 4:
        raise InputRejected(
            TooLarge(
                limit="image_bytes", actual=len(block.data) * 3 // 4, maximum=limits.max_image_bytes
            )
        )
    try:
        raw = base64.b64decode(block.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputRejected(ImageInvalid(detail=f"image data is not valid base64: {exc}")) from exc
    if len(raw) > limits.max_image_bytes:
        raise InputRejected(
            TooLarge(limit="image_bytes", actual=len(raw), maximum=limits.max_image_bytes)
        )
    if not _has_magic(block.media_type, raw):
        raise InputRejected(
            ImageInvalid(detail=f"image bytes do not match media type {block.media_type.value}")
        )
    return raw


def _has_magic(media_type: ImageMediaType, raw: bytes) -> bool:
    if media_type is ImageMediaType.WEBP:
        return len(raw) >= 12 and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"
    return any(raw.startswith(magic) for magic in _MAGIC[media_type])


def validate_input(
    item: AnyInput, limits: Limits = DEFAULT_LIMITS, *, message_bytes: int | None = None
) -> None:
    """Apply every rule of DOMAIN.md §2; raise :class:`InputRejected` on the first broken one."""
    if message_bytes is not None and message_bytes > limits.max_message_bytes:
        raise InputRejected(
            TooLarge(limit="message_bytes", actual=message_bytes, maximum=limits.max_message_bytes)
        )
    _check_durability(item)
    if isinstance(item, PeerInput):
        _check_peer(item)
    if (
        isinstance(item, ExternalEventInput)
        and isinstance(item.payload, dict)
        and ("blocks" in item.payload)
    ):
        raise InputRejected(
            PayloadInvalid(detail="external_event payload may not carry a top-level 'blocks' key")
        )
    # Blob references count too: each one costs a blob store lookup at admission and a read at
    # every run, so an unbounded list of them is as costly as unbounded inline images.
    images = [b for b in content_blocks(item) if isinstance(b, InlineImageBlock | BlobImageBlock)]
    if len(images) > limits.max_images:
        raise InputRejected(TooLarge(limit="images", actual=len(images), maximum=limits.max_images))
    for block in images:
        if isinstance(block, InlineImageBlock):
            decode_image(block, limits)


def _check_durability(item: AnyInput) -> None:
    header = item.header
    if header.durability is not Durability.DERIVED:
        return
    kind = input_kind(item)
    if kind not in _DERIVED_KINDS:
        raise InputRejected(
            DurabilityViolation(detail=f"derived durability is not allowed for {kind.value}")
        )
    if header.source.type not in ("flow", "system"):
        raise InputRejected(
            DurabilityViolation(
                detail=f"derived durability needs flow or system origin, not {header.source.type}"
            )
        )


def _check_peer(item: PeerInput) -> None:
    convention = item.convention
    if isinstance(convention, PeerResponseProgress) and item.handling_mode is not None:
        raise InputRejected(
            PeerHandlingModeInvalid(detail="response_progress may not carry a handling_mode")
        )
    if isinstance(convention, PeerResponseTerminal):
        if not convention.request_id.strip():
            raise InputRejected(
                PeerResponseTerminalInvalid(detail="response_terminal needs a request_id")
            )
        if convention.status not in ("completed", "failed"):
            raise InputRejected(
                PeerResponseTerminalInvalid(
                    detail=f"response_terminal status must be completed or failed, "
                    f"not {convention.status!r}"
                )
            )
