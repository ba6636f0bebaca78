"""Pipelined transactions on every runtime store: a transaction that touches a runtime an open
one is working on decides on that state, commits only after it, and is aborted (nothing written,
nothing swapped in) when it fails; one that shares no runtime commits on its own."""

from __future__ import annotations

import asyncio

import pytest

from persistence.errors import StoreUnavailable
from schemas import Accepted
from tests.contract.driver_fixtures import Harness, new_runtime_id, prompt
from worker.driver import Aborted


async def test_a_dependent_transaction_decides_on_the_open_state_and_commits_after_it(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    first, second = prompt("first"), prompt("second")
    earlier, later = harness.driver.transaction(), harness.driver.transaction()
    await earlier.accept_input(runtime_id, first)
    decided = await later.accept_input(runtime_id, second)
    assert isinstance(decided.outcome, Accepted)
    assert decided.outcome.admission_seq == 2  # decided on the state ``earlier`` produced
    assert earlier in later.parents

    waiting = asyncio.get_running_loop().create_task(later.commit())
    await asyncio.sleep(0)  # the dependent waits for its parent
    assert not waiting.done()
    assert await harness.inner_store.list_inputs(runtime_id) == []
    await earlier.commit()
    await asyncio.wait_for(waiting, 10)

    stored = await harness.inner_store.list_inputs(runtime_id)
    assert [r.input_id for r in stored] == [first.header.id, second.header.id]
    cached = harness.driver.cached(runtime_id)
    assert cached is not None
    assert second.header.id in cached.inputs


async def test_a_dependent_of_a_failed_transaction_is_aborted_and_writes_nothing(
    harness: Harness,
) -> None:
    runtime_id, other_id = new_runtime_id(), new_runtime_id()
    await harness.accept_input(runtime_id, prompt("committed before"))
    before = harness.driver.cached(runtime_id)
    stored_before = await harness.inner_store.list_inputs(runtime_id)
    failing, dependent, independent = (harness.driver.transaction() for _ in range(3))
    await failing.accept_input(runtime_id, prompt("lost with its transaction"))
    await dependent.accept_input(runtime_id, prompt("built on it"))
    await independent.accept_input(other_id, prompt("elsewhere"))
    assert dependent.parents == {failing}
    assert not independent.parents

    harness.store.fail_next("commit", error=StoreUnavailable("injected fault: commit"))
    with pytest.raises(StoreUnavailable):
        await failing.commit()
    with pytest.raises(Aborted):
        await dependent.commit()
    await independent.commit()

    assert harness.driver.cached(runtime_id) is before
    assert await harness.inner_store.list_inputs(runtime_id) == stored_before
    assert len(await harness.inner_store.list_inputs(other_id)) == 1


async def test_nothing_is_swapped_in_before_the_commit_returns(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    await harness.accept_input(runtime_id, prompt("first"))
    before = harness.driver.cached(runtime_id)
    async with harness.driver.transaction() as transaction:
        await transaction.accept_input(runtime_id, prompt("decided, never committed"))
    assert harness.driver.cached(runtime_id) is before
    assert len(await harness.inner_store.list_inputs(runtime_id)) == 1
