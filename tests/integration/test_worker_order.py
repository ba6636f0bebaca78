"""Per runtime, messages are processed in publish order, whatever the interleaving."""

from __future__ import annotations

import pytest

from schemas import InputPhase
from tests.integration.conftest import new_runtime_id
from worker.client import messages
from worker.testing import WorkerFactory

pytestmark = pytest.mark.integration


async def test_a_thousand_inputs_over_fifty_runtimes_keep_publish_order(
    meerkat_worker: WorkerFactory,
) -> None:
    harness = await meerkat_worker()
    runtimes = [new_runtime_id() for _ in range(50)]
    published: dict[str, list[object]] = {r: [] for r in runtimes}
    envelopes = []
    for i in range(1000):
        runtime_id = runtimes[(i * 7) % 50]  # interleave the runtimes
        envelope = messages.prompt(runtime_id, f"message {i}")
        envelopes.append(envelope)
        published[runtime_id].append(envelope.input.header.id)
    for envelope in envelopes:  # one at a time: each confirmed before the next is sent
        await harness.send(envelope)

    await harness.run_until_idle()

    assert harness.worker is not None
    store = harness.worker.store
    assert store is not None
    for runtime_id in runtimes:
        inputs = await store.list_inputs(runtime_id)
        by_admission = [r.input_id for r in sorted(inputs, key=lambda r: r.admission_seq)]
        assert by_admission == published[runtime_id], runtime_id
        assert all(r.phase is InputPhase.CONSUMED for r in inputs)
        receipts = await store.list_receipts(runtime_id, limit=100)
        consumed_in_runs = [i for r in sorted(receipts, key=lambda r: r.committed_at)
                            for i in r.contributing_input_ids]
        assert sorted(map(str, consumed_in_runs)) == sorted(map(str, published[runtime_id]))
