"""The driver's admission contract on every runtime store: durable before the ack, dedupe across
restarts, and what a failed or ambiguous commit leaves behind (DOMAIN.md §7, §8, §11).

A "restart" is a new :class:`RuntimeDriver` on the same stores: it knows only what it reads back.
"""

from __future__ import annotations

from uuid import uuid4

import pytest

from persistence.errors import CommitOutcomeUnknown, StoreUnavailable, VersionConflict
from persistence.factory import open_runtime_store
from schemas import (
    Accepted,
    Deduplicated,
    Durability,
    EventCode,
    InputPhase,
    Rejected,
    RuntimePhase,
)
from tests.contract.driver_fixtures import (
    Harness,
    external_event,
    new_runtime_id,
    prompt,
    run_next,
)
from tests.contract.faults import When
from tests.unit.images import inline_image
from worker.core import Signal


async def test_an_accepted_input_is_in_the_store_before_the_ack(
    harness: Harness, runtime_store_url: str
) -> None:
    runtime_id = new_runtime_id()
    item = prompt()

    outcome = await harness.accept_input(runtime_id, item)

    assert isinstance(outcome, Accepted)
    assert (outcome.input_id, outcome.phase, outcome.admission_seq) == (
        item.header.id,
        InputPhase.QUEUED,
        1,
    )
    stored = await harness.inner_store.get_input(runtime_id, item.header.id)
    assert stored is not None
    assert (stored.phase, stored.payload) == (InputPhase.QUEUED, item)
    runtime = await harness.restart().driver.load(runtime_id)
    assert runtime.phase is RuntimePhase.IDLE
    assert runtime.inputs[item.header.id].phase is InputPhase.QUEUED
    if runtime_store_url != "memory://":
        # A store opened afresh on the same database sees the row too: nothing waits in a pool.
        reopened = await open_runtime_store(runtime_store_url)
        try:
            assert await reopened.get_input(runtime_id, item.header.id) == stored
        finally:
            await reopened.close()


@pytest.mark.parametrize("restart", [False, True], ids=["same_driver", "after_restart"])
async def test_a_repeated_idempotency_key_is_deduplicated(harness: Harness, restart: bool) -> None:
    runtime_id = new_runtime_id()
    key = f"key-{uuid4()}"
    first, second = prompt(key=key), prompt(key=key)
    await harness.accept_input(runtime_id, first)
    process = harness.restart() if restart else harness

    outcome = await process.accept_input(runtime_id, second)

    assert outcome == Deduplicated(input_id=second.header.id, existing_id=first.header.id)
    assert list(await harness.phases(runtime_id)) == [first.header.id]


@pytest.mark.parametrize("restart", [False, True], ids=["same_driver", "after_restart"])
async def test_a_repeated_input_id_is_deduplicated(harness: Harness, restart: bool) -> None:
    runtime_id = new_runtime_id()
    item = prompt(key=f"key-{uuid4()}")
    await harness.accept_input(runtime_id, item)
    process = harness.restart() if restart else harness

    outcome = await process.accept_input(runtime_id, item)

    assert outcome == Deduplicated(input_id=item.header.id, existing_id=item.header.id)
    assert list(await harness.phases(runtime_id)) == [item.header.id]


@pytest.mark.parametrize("restart", [False, True], ids=["same_driver", "after_restart"])
async def test_a_consumed_input_still_deduplicates_by_id_and_by_key(
    harness: Harness, restart: bool
) -> None:
    """Terminal inputs leave the driver's memory; their rows keep answering for them."""
    runtime_id = new_runtime_id()
    key = f"key-{uuid4()}"
    item = prompt(key=key)
    await harness.accept_input(runtime_id, item)
    await run_next(harness, runtime_id)
    process = harness.restart() if restart else harness
    same_key = prompt(key=key)

    again = await process.accept_input(runtime_id, item)
    keyed = await process.accept_input(runtime_id, same_key)

    assert again == Deduplicated(input_id=item.header.id, existing_id=item.header.id)
    assert keyed == Deduplicated(input_id=same_key.header.id, existing_id=item.header.id)
    assert await harness.phases(runtime_id) == {item.header.id: InputPhase.CONSUMED}


@pytest.mark.parametrize("stored", [False, True], ids=["new_runtime", "stored_runtime"])
async def test_a_failed_accept_commit_leaves_no_state_and_a_retry_succeeds(
    harness: Harness, stored: bool
) -> None:
    runtime_id = new_runtime_id()
    if stored:
        await harness.accept_input(runtime_id, prompt())
    before = await harness.driver.load(runtime_id)
    events_before = await harness.event_codes(runtime_id)
    signals: list[tuple[str, Signal]] = []
    harness.driver.on_signal(lambda rid, signal: signals.append((rid, signal)))
    item = prompt(key=f"key-{uuid4()}")
    harness.store.fail_next("commit")

    with pytest.raises(StoreUnavailable):
        await harness.accept_input(runtime_id, item)

    assert harness.driver.cached(runtime_id) is before
    assert signals == [], "the run loop hears of nothing that was not committed"
    assert await harness.inner_store.get_input(runtime_id, item.header.id) is None
    assert await harness.event_codes(runtime_id) == events_before
    loaded = await harness.inner_store.load_runtime(runtime_id)
    assert (loaded.row is None) is not stored
    retry = await harness.accept_input(runtime_id, item)
    assert isinstance(retry, Accepted)
    assert retry.admission_seq == before.next_admission_seq
    assert signals == [(runtime_id, Signal.WAKE)]
    assert (await harness.phases(runtime_id))[item.header.id] is InputPhase.QUEUED


@pytest.mark.parametrize("stored", [False, True], ids=["new_runtime", "stored_runtime"])
async def test_an_unknown_commit_outcome_drops_the_cache_and_the_retry_is_deduplicated(
    harness: Harness, stored: bool
) -> None:
    runtime_id = new_runtime_id()
    if stored:
        await harness.accept_input(runtime_id, prompt())
    item = prompt()
    lost = CommitOutcomeUnknown("connection lost during COMMIT")
    harness.store.fail_next("commit", "after", lost)

    with pytest.raises(CommitOutcomeUnknown):
        await harness.accept_input(runtime_id, item)

    assert harness.driver.cached(runtime_id) is None
    retry = await harness.accept_input(runtime_id, item)
    assert retry == Deduplicated(input_id=item.header.id, existing_id=item.header.id)
    assert (await harness.phases(runtime_id))[item.header.id] is InputPhase.QUEUED
    codes = await harness.event_codes(runtime_id)
    assert codes.count(EventCode.INPUT_ACCEPTED) == (2 if stored else 1)


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_failed_image_put_leaves_nothing_and_a_retry_succeeds(
    harness: Harness, when: When
) -> None:
    runtime_id = new_runtime_id()
    await harness.accept_input(runtime_id, prompt())
    before = harness.driver.cached(runtime_id)
    commits = harness.store.calls["commit"]
    item = prompt("see", images=(inline_image(),))
    harness.blobs.fail_next("put_image", when)

    with pytest.raises(StoreUnavailable):
        await harness.accept_input(runtime_id, item)

    assert harness.store.calls["commit"] == commits
    assert harness.driver.cached(runtime_id) is before
    assert await harness.inner_store.get_input(runtime_id, item.header.id) is None
    # An image put that did reach the store is an orphan: harmless, left to the collector.
    assert len(await harness.inner_blobs.list_blobs()) == (0 if when == "before" else 1)
    assert isinstance(await harness.accept_input(runtime_id, item), Accepted)
    assert len(await harness.inner_blobs.list_blobs()) == 1


@pytest.mark.parametrize("stored", [False, True], ids=["new_runtime", "stored_runtime"])
async def test_two_drivers_on_one_runtime_fence_each_other_and_lose_nothing(
    harness: Harness, stored: bool
) -> None:
    runtime_id = new_runtime_id()
    if stored:
        await harness.restart().accept_input(runtime_id, prompt())
    first, second = harness, harness.restart()
    # Every cold load of a stored runtime commits its recovery, which fences older copies out:
    # load the second driver first so that the first one holds the newest copy.
    await second.driver.load(runtime_id)
    await first.driver.load(runtime_id)
    a, b, c = prompt(), prompt(), prompt()

    assert isinstance(await first.accept_input(runtime_id, a), Accepted)
    with pytest.raises(VersionConflict):
        await second.accept_input(runtime_id, b)
    assert second.driver.cached(runtime_id) is None
    assert isinstance(await second.accept_input(runtime_id, b), Accepted)
    with pytest.raises(VersionConflict):
        await first.accept_input(runtime_id, c)
    assert isinstance(await first.accept_input(runtime_id, c), Accepted)

    stored_inputs = await harness.inner_store.list_inputs(runtime_id)
    ours = [r for r in stored_inputs if r.input_id in {a.header.id, b.header.id, c.header.id}]
    assert [r.input_id for r in ours] == [a.header.id, b.header.id, c.header.id]
    assert all(r.phase is InputPhase.QUEUED for r in ours)
    seqs = [r.admission_seq for r in stored_inputs]
    assert seqs == sorted(set(seqs))


async def test_the_fault_wrappers_fail_before_or_after_the_inner_call(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    harness.store.fail_next("commit", "before")
    with pytest.raises(StoreUnavailable):
        await harness.accept_input(runtime_id, prompt())
    assert (await harness.inner_store.load_runtime(runtime_id)).row is None
    harness.store.fail_next("commit", "after")
    with pytest.raises(StoreUnavailable):
        await harness.accept_input(runtime_id, prompt())
    assert (await harness.inner_store.load_runtime(runtime_id)).row is not None
    assert harness.store.calls["commit"] == 2
    assert harness.store.plan.armed("commit") == 0
    with pytest.raises(ValueError, match="no method"):
        harness.store.fail_next("comit")


async def test_a_superseding_event_rewrites_the_older_row_in_the_same_commit(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    key = f"deploy-{uuid4()}"
    older, newer = external_event(key), external_event(key)
    await harness.accept_input(runtime_id, older)

    outcome = await harness.accept_input(runtime_id, newer)

    assert isinstance(outcome, Accepted)
    assert await harness.phases(runtime_id) == {
        older.header.id: InputPhase.SUPERSEDED,
        newer.header.id: InputPhase.QUEUED,
    }
    stored = await harness.inner_store.get_input(runtime_id, older.header.id)
    assert stored is not None
    assert stored.superseded_by == newer.header.id
    runtime = await harness.restart().driver.load(runtime_id)
    assert list(runtime.inputs) == [newer.header.id]


async def test_a_rejected_input_leaves_an_event_and_no_runtime(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    item = prompt(durability=Durability.DERIVED)

    outcome = await harness.accept_input(runtime_id, item)

    assert isinstance(outcome, Rejected)
    assert (await harness.inner_store.load_runtime(runtime_id)).row is None
    assert await harness.event_codes(runtime_id) == [EventCode.INPUT_REJECTED]
    assert isinstance(await harness.accept_input(runtime_id, prompt()), Accepted)


async def test_idempotency_keys_are_scoped_to_their_runtime(harness: Harness) -> None:
    key = f"key-{uuid4()}"
    here, there = new_runtime_id(), new_runtime_id()
    first, second = prompt(key=key), prompt(key=key)

    assert isinstance(await harness.accept_input(here, first), Accepted)
    assert isinstance(await harness.accept_input(there, second), Accepted)
    assert list(await harness.phases(there)) == [second.header.id]
