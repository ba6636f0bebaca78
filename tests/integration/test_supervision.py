"""Every long-lived task is supervised: killed, it comes back and the traffic flows; wedged,
the health endpoints say so, naming the part.

Each case starts a real worker (real broker, PostgreSQL, S3) told by ``MEERKAT_FAULT`` to make
one of its tasks raise (``kill``) or hang (``wedge``) the first time it gets there, and checks
the outcome from outside: prompts consumed, ``/healthz`` and ``/readyz`` answers, restart counts
in ``/metrics``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from tenacity import AsyncRetrying, RetryError, stop_after_delay, wait_fixed

from schemas import EventEnvelope
from tests.integration.conftest import Stack, StackFactory, assert_publish_order, new_runtime_id
from worker.cli.publish import build_prompt

pytestmark = pytest.mark.integration

FAST = {"stall_seconds": 1.0, "heartbeat_seconds": 0.5, "executor_timeout_seconds": 1.0}


async def eventually(what: str, check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    """Until ``check()`` is true, polling: the endpoints are looked at from outside."""
    try:
        async for attempt in AsyncRetrying(stop=stop_after_delay(seconds), wait=wait_fixed(0.2)):
            with attempt:
                assert await check(), what
    except RetryError:
        raise AssertionError(f"not within {seconds}s: {what}") from None


async def get(stack: Stack, path: str) -> tuple[int, Any]:
    assert stack.worker.health is not None
    url = f"http://127.0.0.1:{stack.worker.health.port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
        return response.status, json.loads(text) if path != "/metrics" and text != "ok" else text


async def consumes_prompts(stack: Stack, count: int = 5) -> None:
    """Prompts to one runtime are all consumed, admitted in publish order."""
    runtime_id = new_runtime_id()
    envelopes = [build_prompt(runtime_id, f"p{i}", []) for i in range(count)]
    for envelope in envelopes:
        await stack.publish(envelope)
    for envelope in envelopes:
        await stack.wait_for_event(consumed(str(envelope.input.header.id)))
    assert stack.worker.store is not None
    await assert_publish_order(stack.worker.store, [runtime_id], envelopes)


def consumed(input_id: str) -> Callable[[EventEnvelope], bool]:
    def matches(event: EventEnvelope) -> bool:
        return event.code.value == "input.consumed" and event.data["input_id"] == input_id

    return matches


async def restarts(stack: Stack, task: str) -> float:
    _, text = await get(stack, "/metrics")
    for line in str(text).splitlines():
        if line.startswith(f'meerkat_task_restarts_total{{task="{task}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize(
    ("fault", "task"),
    [
        ("committer_loop:1:raise", "committer"),
        ("outbox_loop:2:raise", "outbox"),
        ("broker_session:1:raise", "broker"),
    ],
)
async def test_a_killed_supervised_task_is_restarted_and_work_goes_on(
    stack_factory: StackFactory, fault: str, task: str
) -> None:
    stack: Stack = await stack_factory(fault=fault, serve_http=True, **FAST)
    await consumes_prompts(stack)

    async def restarted() -> bool:
        return await restarts(stack, task) >= 1

    await eventually(f"a restart of {task} in /metrics", restarted)
    await eventually("/readyz 200", lambda: _status_is(stack, "/readyz", 200))


@pytest.mark.parametrize(
    "fault", ["consumer_delivery:2:raise", "membership_tick:2:raise", "run_turn:1:raise"]
)
async def test_a_killed_loop_step_is_survived_and_work_goes_on(
    stack_factory: StackFactory, fault: str
) -> None:
    stack: Stack = await stack_factory(fault=fault, serve_http=True, **FAST)
    await consumes_prompts(stack)
    await eventually("/readyz 200", lambda: _status_is(stack, "/readyz", 200))
    assert await get(stack, "/healthz") == (200, "ok")


@pytest.mark.parametrize(
    ("fault", "path", "part"),
    [
        ("committer_loop:1:hang", "/healthz", "pipeline"),
        ("consumer_delivery:1:hang", "/healthz", "pipeline"),
        ("outbox_loop:2:hang", "/healthz", "outbox"),
        ("run_turn:1:hang", "/healthz", "runs"),
        ("membership_tick:2:hang", "/readyz", "membership"),
    ],
)
async def test_a_wedged_task_fails_the_health_endpoint_naming_it(
    stack_factory: StackFactory, fault: str, path: str, part: str
) -> None:
    stack: Stack = await stack_factory(fault=fault, serve_http=True, **FAST)
    await stack.publish(build_prompt(new_runtime_id(), "into the wedge", []))

    async def failing() -> bool:
        status, body = await get(stack, path)
        return status == 503 and part in body["failing"]

    await eventually(f"{path} 503 naming {part}", failing)


async def _status_is(stack: Stack, path: str, expected: int) -> bool:
    return (await get(stack, path))[0] == expected
