"""The Node.js examples (examples/node) against a real worker: the producer's prompt is accepted
and consumed, and the event consumer sees it happen.

Node.js 20 and npm are required; ``ops/node-examples.sh`` installs the examples' dependencies
from their lock file (once; later runs find them in place).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from schemas import InputPhase
from tests.integration.conftest import Stack, new_runtime_id

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "node"
INSTALL_SECONDS = 300
STEP_SECONDS = 60


async def _install() -> str:
    """The path of ``node``, after the examples' dependencies are installed."""
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        pytest.fail("node and npm are not installed: install Node.js 20 (with npm) to run "
                    "the examples' test")
    process = await asyncio.create_subprocess_exec(
        "bash", str(ROOT / "ops" / "node-examples.sh"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), INSTALL_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"ops/node-examples.sh (npm ci) did not finish within {INSTALL_SECONDS} s")
    if process.returncode != 0:
        pytest.fail(f"ops/node-examples.sh failed ({process.returncode}): {out.decode()}")
    return node


def _env(amqp_url: str, prefix: str) -> dict[str, str]:
    return {**os.environ, "AMQP_URL": amqp_url, "MEERKAT_TOPOLOGY_PREFIX": prefix}


async def _wait(awaitable: Any, seconds: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        pytest.fail(f"timed out after {seconds} s waiting for {what}")


async def _listening(consumer: asyncio.subprocess.Process) -> None:
    """Until the consumer says its queue is bound; fails with its output if it exits first."""
    assert consumer.stderr is not None
    seen: list[bytes] = []
    while True:
        line = await consumer.stderr.readline()
        if not line:
            await consumer.wait()
            pytest.fail(f"consumer.mjs exited ({consumer.returncode}) before listening: "
                        f"{b''.join(seen).decode()}")
        seen.append(line)
        if line.startswith(b"listening on"):
            return


async def test_node_producer_and_consumer_against_a_worker(stack: Stack, amqp_url: str) -> None:
    node = await _install()
    runtime_id = new_runtime_id()
    env = _env(amqp_url, stack.topology.prefix)

    consumer = await asyncio.create_subprocess_exec(
        node, "consumer.mjs", "--until", "input.consumed", "--runtime", runtime_id,
        cwd=EXAMPLES, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _wait(_listening(consumer), STEP_SECONDS, "consumer.mjs to bind its queue")

        producer = await asyncio.create_subprocess_exec(
            node, "producer.mjs", "--runtime", runtime_id, "--text", "hello from node",
            "--timeout", "30", cwd=EXAMPLES, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await _wait(producer.communicate(), STEP_SECONDS,
                               "producer.mjs to print the worker's reply")
        assert producer.returncode == 0, (out + err).decode()
        outcome = json.loads(out.decode().strip().splitlines()[-1])
        assert outcome["outcome_type"] == "accepted", outcome
        input_id = UUID(outcome["input_id"])

        events_out, events_err = await _wait(consumer.communicate(), STEP_SECONDS,
                                             f"consumer.mjs to see input.consumed of {runtime_id}")
        assert consumer.returncode == 0, (events_out + events_err).decode()
    finally:
        if consumer.returncode is None:
            consumer.kill()
            await consumer.wait()

    events = [json.loads(line) for line in events_out.decode().splitlines() if line]
    assert {e["runtime_id"] for e in events} == {runtime_id}
    codes = [e["code"] for e in events]
    assert "input.accepted" in codes
    assert codes[-1] == "input.consumed"
    consumed = [e for e in events if e["code"] == "input.consumed"]
    assert consumed[0]["data"]["input_id"] == str(input_id)

    store = stack.worker.store
    assert store is not None
    stored = await store.get_input(runtime_id, input_id)
    assert stored is not None
    assert stored.phase is InputPhase.CONSUMED
