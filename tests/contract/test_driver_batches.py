"""Group commit on every runtime store: a :class:`Transaction` spanning two runtimes commits all of
its decisions or none, and each decision sees the state the earlier ones in the batch produced."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

import pytest

from persistence.errors import (
    CommitOutcomeUnknown,
    DuplicateRow,
    StoreError,
    StoreUnavailable,
    VersionConflict,
)
from schemas import (
    Accepted,
    CommandCompleted,
    CommandReport,
    Deduplicated,
    InputPhase,
    Outcome,
    PromptInput,
    Rejected,
    Retire,
    RuntimePhase,
)
from tests.contract.driver_fixtures import (
    Harness,
    new_runtime_id,
    prompt,
    reset,
    retire,
    run_next,
)
from tests.contract.faults import When
from worker.core import Decision
from worker.driver import Transaction


async def _decide(
    harness: Harness, left: str, right: str, items: list[PromptInput], command: Retire
) -> list[Outcome]:
    """Three inputs for ``left`` (the third repeats the first's key), one for ``right``, then
    ``command`` twice on ``left``; all in one batch."""
    stored_before = await harness.phases(right)
    async with harness.driver.transaction() as batch:
        decisions = [await batch.accept_input(left, item) for item in items[:3]]
        decisions.append(await batch.accept_input(right, items[3]))
        decisions.append(await batch.apply_command(left, command))
        decisions.append(await batch.apply_command(left, command))
        assert await harness.phases(right) == stored_before, "nothing is written before commit"
        await batch.commit()
    outcomes = [d.outcome for d in decisions]
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def _work() -> tuple[list[PromptInput], Retire]:
    key = f"key-{uuid4()}"
    return [prompt(key=key), prompt(), prompt(key=key), prompt()], retire()


async def test_a_batch_over_two_runtimes_commits_once_and_decides_in_order(
    harness: Harness,
) -> None:
    left, right = new_runtime_id(), new_runtime_id()
    items, command = _work()
    commits = harness.store.calls["commit"]

    outcomes = await _decide(harness, left, right, items, command)

    assert harness.store.calls["commit"] == commits + 1
    first, second, repeat, other, retired, again = outcomes
    assert isinstance(first, Accepted)
    assert isinstance(second, Accepted)
    assert (first.admission_seq, second.admission_seq) == (1, 2)
    assert repeat == Deduplicated(input_id=items[2].header.id, existing_id=items[0].header.id)
    assert isinstance(other, Accepted)
    assert other.admission_seq == 1
    assert retired == CommandCompleted(
        command_id=command.command_id,
        command_type="retire",
        state=RuntimePhase.RETIRED,
        report=CommandReport(inputs_abandoned=0, inputs_pending_drain=2),
    )
    assert again == retired.model_copy(update={"deduplicated": True})
    assert await harness.phases(left) == {
        items[0].header.id: InputPhase.QUEUED,
        items[1].header.id: InputPhase.QUEUED,
    }
    assert await harness.phases(right) == {items[3].header.id: InputPhase.QUEUED}
    row = (await harness.inner_store.load_runtime(left)).row
    assert row is not None
    assert row.phase is RuntimePhase.RETIRED
    assert await harness.inner_store.find_command(left, command.command_id) == retired


_FAULTS: dict[When, StoreError] = {
    "before": StoreUnavailable("database went away"),
    "after": CommitOutcomeUnknown("connection lost during COMMIT"),
}


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_failed_batch_commit_writes_all_or_nothing(harness: Harness, when: When) -> None:
    left, right = new_runtime_id(), new_runtime_id()
    items, command = _work()
    cached = {rid: await harness.driver.load(rid) for rid in (left, right)}
    harness.store.fail_next("commit", when, _FAULTS[when])

    with pytest.raises(type(_FAULTS[when])):
        await _decide(harness, left, right, items, command)

    written: dict[UUID, InputPhase] = {}
    for rid in (left, right):
        written |= await harness.phases(rid)
    if when == "before":
        assert written == {}
        for rid in (left, right):
            assert harness.driver.cached(rid) is cached[rid]
            assert (await harness.inner_store.load_runtime(rid)).row is None
        assert await harness.inner_store.find_command(left, command.command_id) is None
    else:
        assert set(written) == {items[i].header.id for i in (0, 1, 3)}
        assert [harness.driver.cached(rid) for rid in (left, right)] == [None, None]

    retry = await _decide(harness, left, right, items, command)

    if when == "before":
        assert [type(o) for o in retry] == [
            Accepted,
            Accepted,
            Deduplicated,
            Accepted,
            CommandCompleted,
            CommandCompleted,
        ]
    else:
        # The repeated key names a different message; the now retired runtime's gate refuses it
        # before key dedupe is consulted (DOMAIN.md §3 orders gate, validation, dedupe).
        assert [type(o) for o in retry[:4]] == [Deduplicated, Deduplicated, Rejected, Deduplicated]
        assert all(isinstance(o, CommandCompleted) and o.deduplicated for o in retry[4:])
    assert set(await harness.phases(left)) == {items[0].header.id, items[1].header.id}


async def test_a_batch_without_lookups_fails_whole_on_a_stored_duplicate(
    harness: Harness,
) -> None:
    """Skipping the store lookups leaves duplicates of archived rows to the unique constraints:
    the commit is refused whole, and the retry with lookups answers them as duplicates."""
    runtime_id = new_runtime_id()
    key = f"key-{uuid4()}"
    archived, command = prompt(key=key), retire()
    await harness.accept_input(runtime_id, archived)
    await run_next(harness, runtime_id)
    await harness.apply_command(runtime_id, command)
    await harness.apply_command(runtime_id, reset())
    before = harness.driver.cached(runtime_id)
    stored_before = await harness.inner_store.list_inputs(runtime_id)
    fresh, same_key = prompt(), prompt(key=key)

    async def without_lookups(repeat: Callable[[Transaction], Awaitable[Decision]]) -> None:
        async with harness.driver.transaction() as batch:
            await batch.accept_input(runtime_id, fresh, look_up_stored=False)
            await repeat(batch)
            await batch.commit()

    repeats: list[Callable[[Transaction], Awaitable[Decision]]] = [
        lambda b: b.accept_input(runtime_id, archived, look_up_stored=False),
        lambda b: b.accept_input(runtime_id, same_key, look_up_stored=False),
        lambda b: b.apply_command(runtime_id, command, look_up_stored=False),
    ]
    for repeat in repeats:
        with pytest.raises(DuplicateRow):
            await without_lookups(repeat)
        assert harness.driver.cached(runtime_id) is before
        assert await harness.inner_store.list_inputs(runtime_id) == stored_before

    async with harness.driver.transaction() as batch:
        outcomes = [
            (await batch.accept_input(runtime_id, fresh)).outcome,
            (await batch.accept_input(runtime_id, archived)).outcome,
            (await batch.accept_input(runtime_id, same_key)).outcome,
            (await batch.apply_command(runtime_id, command)).outcome,
        ]
        await batch.commit()
    assert isinstance(outcomes[0], Accepted)
    assert outcomes[1:3] == [
        Deduplicated(input_id=archived.header.id, existing_id=archived.header.id),
        Deduplicated(input_id=same_key.header.id, existing_id=archived.header.id),
    ]
    assert isinstance(outcomes[3], CommandCompleted)
    assert outcomes[3].deduplicated


async def test_a_version_conflict_on_one_runtime_refuses_the_whole_batch(
    harness: Harness,
) -> None:
    fenced, bystander = new_runtime_id(), new_runtime_id()
    await harness.accept_input(fenced, prompt())
    await harness.accept_input(bystander, prompt())
    # Another process takes the runtime over: its cold load moves the stored version on.
    await harness.restart().driver.load(fenced)
    mine, theirs = prompt(), prompt()
    before = await harness.phases(bystander)

    with pytest.raises(VersionConflict):
        await _accept_together(harness, [(bystander, mine), (fenced, theirs)])

    assert await harness.phases(bystander) == before
    assert theirs.header.id not in await harness.phases(fenced)
    assert [harness.driver.cached(rid) for rid in (bystander, fenced)] == [None, None]
    retried = await _accept_together(harness, [(bystander, mine), (fenced, theirs)])
    assert all(isinstance(d.outcome, Accepted) for d in retried)


async def _accept_together(
    harness: Harness, deliveries: list[tuple[str, PromptInput]]
) -> list[Decision]:
    async with harness.driver.transaction() as batch:
        decisions = [await batch.accept_input(rid, item) for rid, item in deliveries]
        await batch.commit()
    return decisions
