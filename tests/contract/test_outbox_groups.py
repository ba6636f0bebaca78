"""The outbox of deployments sharing one database: each relay reads only its own deployment's
events (and those written by no deployment), and one relay per deployment holds the lease."""

from __future__ import annotations

from uuid import uuid4

import pytest

from persistence.factory import open_runtime_store
from persistence.ports import RuntimeStore
from tests.contract.runtime_builders import event, new_runtime_id, step, unsent_ids
from tests.fixtures.postgres import OpenAs


def _group(name: str) -> str:
    return f"{name}-{uuid4().hex[:8]}"  # the PostgreSQL database is the session's


async def test_a_relay_reads_only_its_own_deployments_events(
    runtime_store: RuntimeStore, runtime_store_as: OpenAs
) -> None:
    blue = await runtime_store_as("worker-a", _group("blue"))
    green = await runtime_store_as("worker-b", _group("green"))
    ours, theirs, nobodys = (event(new_runtime_id()) for _ in range(3))
    await blue.commit([step(ours.runtime_id, 1, events=(ours,))])
    await green.commit([step(theirs.runtime_id, 1, events=(theirs,))])
    await runtime_store.commit([step(nobodys.runtime_id, 1, events=(nobodys,))])

    seen_by_blue = set(await unsent_ids(blue))
    assert {ours.event_id, nobodys.event_id} <= seen_by_blue
    assert theirs.event_id not in seen_by_blue
    seen_by_green = set(await unsent_ids(green))
    assert theirs.event_id in seen_by_green
    assert ours.event_id not in seen_by_green


async def test_one_store_of_a_deployment_leads_its_relay(
    runtime_store_url: str, runtime_store_as: OpenAs
) -> None:
    group = _group("blue")
    first = await runtime_store_as("worker-a", group)
    second = await runtime_store_as("worker-b", group)
    elsewhere = await runtime_store_as("worker-c", _group("green"))

    assert await first.lead_relay()
    assert await first.lead_relay(), "a lease once held is kept"
    assert await elsewhere.lead_relay(), "another deployment's lease is its own"
    if runtime_store_url.startswith("sqlite"):
        # One process owns a SQLite database: its stores always lead.
        assert await second.lead_relay()
        return
    assert not await second.lead_relay()
    await first.release_relay()
    assert await second.lead_relay(), "a released lease is taken by the next one that asks"
    assert not await first.lead_relay()


@pytest.mark.integration
async def test_a_closed_store_leaves_the_lease_to_the_next(postgres_url: str) -> None:
    """On PostgreSQL the lease is the store's session: it ends with the store (or the worker)."""
    group = _group("blue")
    first = await open_runtime_store(postgres_url, writer_id="worker-a", writer_group=group)
    second = await open_runtime_store(postgres_url, writer_id="worker-b", writer_group=group)
    try:
        assert await first.lead_relay()
        assert not await second.lead_relay()
        await first.close()
        assert await second.lead_relay()
    finally:
        await first.close()
        await second.close()
