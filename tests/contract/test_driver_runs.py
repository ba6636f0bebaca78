"""Images and runs through the driver (DOMAIN.md §6, §7): images reach the blob store before the
ack and only references reach the runtime store; a run gets them back inline; a missing image or
a failing executor fails the run, and the third failure abandons the input.

The image tests run over every runtime store and every blob store (memory, file system, S3).
"""

from __future__ import annotations

import base64

import pytest

from persistence.errors import CommitOutcomeUnknown, StoreUnavailable, VersionConflict
from schemas import (
    Accepted,
    AttemptsExhausted,
    BlobImageBlock,
    EventCode,
    InlineImageBlock,
    InputPhase,
    PromptInput,
    TextBlock,
    blob_id_for,
)
from tests.contract.driver_fixtures import Harness, new_runtime_id, prompt, run_next
from tests.contract.faults import When
from tests.unit.images import inline_image, png_bytes
from worker.core import MAX_STAGE_ATTEMPTS
from worker.runs.executors.echo import execute

_LOST = CommitOutcomeUnknown("connection lost during COMMIT")


def _image_prompt() -> tuple[PromptInput, InlineImageBlock]:
    image = inline_image(raw=png_bytes(width=3, height=2))
    return prompt("what is in this picture?", images=(image,)), image


async def test_images_are_externalized_before_the_ack(image_harness: Harness) -> None:
    harness = image_harness
    runtime_id = new_runtime_id()
    item, image = _image_prompt()
    blob_id = blob_id_for(image.media_type.value, image.data)

    outcome = await harness.accept_input(runtime_id, item)

    assert isinstance(outcome, Accepted)
    journal = harness.journal
    assert journal.index("blobs.put_image") < journal.index("store.commit")
    stored = await harness.inner_store.get_input(runtime_id, item.header.id)
    assert stored is not None
    assert isinstance(stored.payload, PromptInput)
    assert stored.payload.content == [
        TextBlock(text="what is in this picture?"),
        BlobImageBlock(media_type=image.media_type, blob_id=blob_id),
    ]
    assert image.data not in stored.payload.model_dump_json()
    assert blob_id in await harness.inner_store.referenced_blob_ids()
    assert await harness.inner_blobs.exists(blob_id)
    assert (await harness.inner_blobs.get(blob_id)).data_base64 == image.data


async def test_a_run_gets_its_images_back_inline(image_harness: Harness) -> None:
    harness = image_harness
    runtime_id = new_runtime_id()
    item, image = _image_prompt()
    await harness.accept_input(runtime_id, item)

    started = await harness.restart().start_run(runtime_id)

    assert started is not None
    assert started.request.inputs == (item,)
    assert started.request.session is None
    result = await execute(started.request)
    size = len(base64.b64decode(image.data))
    assert result.session["transcript"][0]["text"].endswith(f"[image image/png {size} bytes]")


async def test_a_missing_image_fails_the_run_and_counts_an_attempt(
    image_harness: Harness,
) -> None:
    harness = image_harness
    runtime_id = new_runtime_id()
    item, image = _image_prompt()
    await harness.accept_input(runtime_id, item)
    await harness.inner_blobs.delete(blob_id_for(image.media_type.value, image.data))

    assert await harness.start_run(runtime_id) is None

    stored = await harness.inner_store.get_input(runtime_id, item.header.id)
    assert stored is not None
    assert (stored.phase, stored.attempt_count) == (InputPhase.QUEUED, 1)
    events = await harness.inner_store.list_events(runtime_id, limit=1000)
    (failed,) = [e for e in events if e.code is EventCode.RUN_FAILED]
    assert str(failed.data["error"]).startswith("BlobNotFound:")
    for _ in range(MAX_STAGE_ATTEMPTS - 1):
        assert await harness.start_run(runtime_id) is None
    exhausted = await harness.inner_store.get_input(runtime_id, item.header.id)
    assert exhausted is not None
    assert exhausted.phase is InputPhase.ABANDONED
    assert exhausted.abandon_reason == AttemptsExhausted(attempts=MAX_STAGE_ATTEMPTS)


async def test_three_failed_runs_abandon_the_input(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    doomed = prompt("doomed")
    await harness.accept_input(runtime_id, doomed)
    attempts = []

    for attempt in range(1, MAX_STAGE_ATTEMPTS + 1):
        # A restart between failures must not reset the count.
        process = harness.restart() if attempt == 2 else harness
        started = await process.start_run(runtime_id)
        assert started is not None
        assert started.request.inputs == (doomed,)
        assert await process.fail_run(runtime_id, started.run_id, "executor crashed")
        stored = await harness.inner_store.get_input(runtime_id, doomed.header.id)
        assert stored is not None
        attempts.append((stored.phase, stored.attempt_count))
        harness = process

    assert attempts == [
        (InputPhase.QUEUED, 1),
        (InputPhase.QUEUED, 2),
        (InputPhase.ABANDONED, 3),
    ]
    stored = await harness.inner_store.get_input(runtime_id, doomed.header.id)
    assert stored is not None
    assert stored.abandon_reason == AttemptsExhausted(attempts=3)
    assert await harness.start_run(runtime_id) is None
    next_one = prompt("next")
    await harness.accept_input(runtime_id, next_one)
    started = await harness.start_run(runtime_id)
    assert started is not None
    assert started.request.inputs == (next_one,)


async def test_a_completed_run_commits_its_snapshot_receipt_and_consumed_inputs(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    item = prompt("remember this")
    await harness.accept_input(runtime_id, item)
    started = await harness.start_run(runtime_id)
    assert started is not None
    result = await execute(started.request)

    assert await harness.finish_run(runtime_id, started.run_id, result)

    snapshot = await harness.inner_store.load_snapshot(runtime_id)
    assert snapshot is not None
    assert dict(snapshot.body) == dict(result.session)
    (receipt,) = await harness.inner_store.list_receipts(runtime_id)
    assert (receipt.run_id, receipt.contributing_input_ids) == (started.run_id, (item.header.id,))
    assert await harness.phases(runtime_id) == {item.header.id: InputPhase.CONSUMED}
    following = prompt("and this")
    await harness.accept_input(runtime_id, following)
    again = await harness.restart().start_run(runtime_id)
    assert again is not None
    assert again.request.session == snapshot.body


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_failed_stage_commit_runs_nothing_and_loses_nothing(
    harness: Harness, when: When
) -> None:
    runtime_id = new_runtime_id()
    item = prompt()
    await harness.accept_input(runtime_id, item)
    before = harness.driver.cached(runtime_id)
    error = StoreUnavailable("database went away") if when == "before" else _LOST
    harness.store.fail_next("commit", when, error)

    with pytest.raises(type(error)):
        await harness.start_run(runtime_id)

    if when == "before":
        assert harness.driver.cached(runtime_id) is before
        assert await harness.phases(runtime_id) == {item.header.id: InputPhase.QUEUED}
    else:
        assert harness.driver.cached(runtime_id) is None
        assert await harness.phases(runtime_id) == {item.header.id: InputPhase.STAGED}
    # Either way the input runs: still queued, or staged by a run nobody executes, which the
    # reload puts back in its lane.
    started = await run_next(harness, runtime_id)
    assert started.request.inputs == (item,)
    assert await harness.phases(runtime_id) == {item.header.id: InputPhase.CONSUMED}


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_boundary_commit_that_failed_is_retried_and_applied_once(
    harness: Harness, when: When
) -> None:
    runtime_id = new_runtime_id()
    item = prompt()
    await harness.accept_input(runtime_id, item)
    started = await harness.start_run(runtime_id)
    assert started is not None
    result = await execute(started.request)
    error = StoreUnavailable("database went away") if when == "before" else _LOST
    harness.store.fail_next("commit", when, error)

    with pytest.raises(type(error)):
        await harness.finish_run(runtime_id, started.run_id, result)

    # Not committed: the run is still current and its result can be committed again. Maybe
    # committed: the reload finds the run over, and the retry changes nothing.
    assert await harness.finish_run(runtime_id, started.run_id, result) is (when == "before")
    assert await harness.phases(runtime_id) == {item.header.id: InputPhase.CONSUMED}
    assert len(await harness.inner_store.list_receipts(runtime_id)) == 1
    codes = await harness.event_codes(runtime_id)
    assert codes.count(EventCode.RUN_COMPLETED) == 1


async def test_a_failed_recovery_commit_leaves_the_rows_and_caches_nothing(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    item = prompt()
    await harness.accept_input(runtime_id, item)
    assert await harness.start_run(runtime_id) is not None
    row_before = (await harness.inner_store.load_runtime(runtime_id)).row
    restarted = harness.restart()
    restarted.store.fail_next("commit")

    with pytest.raises(StoreUnavailable):
        await restarted.driver.load(runtime_id)

    assert restarted.driver.cached(runtime_id) is None
    assert (await harness.inner_store.load_runtime(runtime_id)).row == row_before
    assert await harness.phases(runtime_id) == {item.header.id: InputPhase.STAGED}
    runtime = await restarted.driver.load(runtime_id)
    assert runtime.inputs[item.header.id].phase is InputPhase.QUEUED


async def test_a_run_gets_the_latest_session_from_memory_or_after_another_writer_from_the_store(
    harness: Harness,
) -> None:
    """The session of a runtime's last boundary is kept with the cached runtime while it has
    work left, so the next run of this process restores it without reading the store; a runtime
    at rest keeps none (its next run reads the store once); when another process has moved the
    runtime on, the reload brings that process's newer session."""
    runtime_id = new_runtime_id()
    await harness.accept_input(runtime_id, prompt("one"))
    await run_next(harness, runtime_id)
    first = await harness.inner_store.load_snapshot(runtime_id)
    assert first is not None
    await harness.accept_input(runtime_id, prompt("two"))
    await harness.accept_input(runtime_id, prompt("two, again"))
    reads_before = harness.journal.count("store.load_snapshot")

    second = await harness.start_run(runtime_id)  # the runtime was at rest: read once

    assert second is not None
    assert second.request.session == first.body
    assert harness.journal.count("store.load_snapshot") == reads_before + 1
    result = await execute(second.request)
    assert await harness.finish_run(runtime_id, second.run_id, result)

    again = await harness.start_run(runtime_id)  # work was left: kept with the runtime

    assert again is not None
    assert again.request.session == result.session
    assert harness.journal.count("store.load_snapshot") == reads_before + 1
    assert await harness.finish_run(runtime_id, again.run_id, await execute(again.request))

    other = harness.restart()
    await other.accept_input(runtime_id, prompt("three"))
    await run_next(other, runtime_id)
    theirs = await other.inner_store.load_snapshot(runtime_id)
    assert theirs is not None
    with pytest.raises(VersionConflict):  # this process's copy is stale: it is dropped
        await harness.accept_input(runtime_id, prompt("four"))
    await harness.accept_input(runtime_id, prompt("four"))

    fourth = await harness.start_run(runtime_id)

    assert fourth is not None
    assert fourth.request.session == theirs.body
