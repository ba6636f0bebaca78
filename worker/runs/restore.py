"""What an executor is given: the staged inputs with their images inline, and the last session.

Images were put into the blob store at admission (the stored inputs refer to them by blob id); a
run gets them back inline. A blob store or database that is briefly away is waited for with the
``RESTORE`` retry preset; a missing or corrupt blob fails the run at once (a typed failure).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from uuid import UUID

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

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
from worker.core import SessionSnapshot
from worker.pipeline.policy import RESTORE, is_transient
from worker.runs.executors import RunRequest


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


Sessions = Callable[[str], Awaitable[SessionSnapshot | None]]
"""The latest session snapshot of a runtime (:meth:`worker.driver.RuntimeDriver.session`)."""


class Restorer:
    """Builds the :class:`RunRequest` of a staged run."""

    def __init__(self, blobs: BlobStore, sessions: Sessions) -> None:
        self._blobs = blobs
        self._sessions = sessions

    async def request(self, runtime_id: str, run_id: UUID, payloads: list[AnyInput]) -> RunRequest:
        try:  # the usual case, without building a retry loop for every run
            inputs, snapshot = await self._restore(runtime_id, payloads)
        except Exception as exc:
            if not is_transient(exc):
                raise
            inputs, snapshot = await self._retried(runtime_id, payloads)
        session = dict(snapshot.body) if snapshot is not None else None
        return RunRequest(runtime_id=runtime_id, run_id=run_id, inputs=inputs, session=session)

    async def _retried(
        self, runtime_id: str, payloads: list[AnyInput]
    ) -> tuple[tuple[AnyInput, ...], SessionSnapshot | None]:
        """The attempts after a first one that failed for a transient reason (the same waits as
        one retry loop from the start: the first of them before the second attempt)."""
        await asyncio.sleep(RESTORE.delay(1, random.random()))
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=lambda state: RESTORE.delay(state.attempt_number + 1, random.random()),
            stop=stop_after_attempt(max(1, (RESTORE.attempts or 1) - 1)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._restore(runtime_id, payloads)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _restore(
        self, runtime_id: str, payloads: list[AnyInput]
    ) -> tuple[tuple[AnyInput, ...], SessionSnapshot | None]:
        inputs = tuple([await restore_images(self._blobs, p) for p in payloads])
        return inputs, await self._sessions(runtime_id)
