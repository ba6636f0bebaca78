"""Images between the wire, the blob store and the executor."""

from __future__ import annotations

import asyncio

from persistence.ports import BlobStore
from schemas import (
    AnyInput,
    BlobImageBlock,
    ContentBlock,
    ExternalEventInput,
    FlowStepInput,
    InlineImageBlock,
    PeerInput,
    PromptInput,
)
from worker.core import BlobWrite


async def put_blobs(blobs: BlobStore, writes: list[BlobWrite]) -> None:
    """Put every image before the commit; content addressing makes a retry rewrite the same."""
    unique = {w.blob_id: w for w in writes}
    await asyncio.gather(*(blobs.put_image(w.media_type, w.data_base64) for w in unique.values()))


async def restore_images(blobs: BlobStore, item: AnyInput) -> AnyInput:
    """The input with blob references inline again, for the executor.

    A missing blob raises ``BlobNotFound``: the run fails with that typed error.
    """

    async def swap(blocks: list[ContentBlock]) -> list[ContentBlock]:
        out: list[ContentBlock] = []
        for block in blocks:
            if isinstance(block, BlobImageBlock):
                stored = await blobs.get(block.blob_id)
                out.append(InlineImageBlock(media_type=block.media_type, data=stored.data_base64))
            else:
                out.append(block)
        return out

    if isinstance(item, PromptInput | PeerInput | FlowStepInput) and not isinstance(
        item.content, str
    ):
        return item.model_copy(update={"content": await swap(item.content)})
    if isinstance(item, ExternalEventInput) and item.blocks:
        return item.model_copy(update={"blocks": await swap(item.blocks)})
    return item
