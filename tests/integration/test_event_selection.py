"""``MEERKAT_EVENTS`` through the real broker: only the selected codes are stored and published,
and a refusal's event is emitted whatever the selection."""

from __future__ import annotations

import json

import pytest

from schemas import Accepted
from tests.integration.conftest import new_runtime_id
from worker.client import messages
from worker.testing import WorkerFactory

pytestmark = pytest.mark.integration


async def test_a_worker_emits_only_the_selected_events_and_always_refusals(
    meerkat_worker: WorkerFactory,
) -> None:
    harness = await meerkat_worker(events="run.*,input.consumed")
    runtime_id = new_runtime_id()
    for text in ("one", "two"):
        assert isinstance(await harness.request(messages.prompt(runtime_id, text)), Accepted)
    await harness.wait_for_event("run.completed", runtime_id=runtime_id, count=2)
    await harness.wait_for_event("input.consumed", runtime_id=runtime_id, count=2)
    bad = messages.prompt(runtime_id, "x")
    body = json.loads(bad.model_dump_json())
    body["input"]["header"]["durability"] = "forever"
    await harness.publish_raw(json.dumps(body).encode(), routing_key=runtime_id,
                              message_id=str(bad.input.header.id))
    await harness.wait_for_event("input.rejected", runtime_id=runtime_id)
    await harness.wait_for_dead_letter()
    await harness.run_until_idle()

    published = harness.codes(runtime_id)
    assert sorted(published) == sorted(["run.started", "run.completed", "input.consumed"] * 2
                                       + ["input.rejected"])
    stored = await harness.inspect(runtime_id)
    assert sorted(e["code"] for e in stored["events"]) == sorted(published)
