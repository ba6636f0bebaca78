"""A shard whose consumer vanished at the broker (aio-pika issue 231) is consumed again."""

from __future__ import annotations

import pytest

from schemas import Accepted
from tests.integration.conftest import Stack, new_runtime_id
from worker.publish import build_prompt

pytestmark = pytest.mark.integration


async def test_a_consumer_lost_at_the_broker_is_restored(stack: Stack) -> None:
    consumers = stack.worker.consumers
    assert consumers is not None
    assert await consumers.ensure() == 0
    # Cancel every consumer behind the worker's back: its own bookkeeping still lists them,
    # as after a broker restart that the robust connection did not fully restore.
    for name, tag in list(consumers._tags.items()):
        await consumers._queues[name].cancel(tag)

    assert await consumers.ensure() == len(consumers.owned)

    reply = await stack.request(build_prompt(new_runtime_id(), "still served", []))
    assert isinstance(reply.outcome, Accepted)
