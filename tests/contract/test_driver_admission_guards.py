"""Admission guards that need the stores, on every runtime store (and every blob store for images).

A command for a runtime that was never stored is refused and writes no runtime row; only
``destroy``, and only with ``destroy_unknown_runtimes``, may tombstone an unknown id. No rejection
of any kind creates a row. An input that refers to a stored image is admitted only if the blob
is there, and a blob store that cannot answer is an outage, not a missing blob.
"""

from __future__ import annotations

from uuid import uuid4

import pytest

from persistence.errors import StoreUnavailable
from persistence.ports import RuntimeStore
from schemas import (
    COMMAND_TYPES,
    Accepted,
    BlobImageBlock,
    CommandCompleted,
    EventCode,
    ImageInvalid,
    ImageMediaType,
    Malformed,
    Rejected,
    RuntimeDestroyed,
    RuntimePhase,
    RuntimeUnknown,
    blob_id_for,
)
from tests.contract.driver_fixtures import Harness, new_runtime_id, prompt
from tests.unit.core_factories import make_command
from tests.unit.images import IMAGE_BYTES, b64, inline_image

PNG = b64(IMAGE_BYTES[ImageMediaType.PNG])


async def assert_not_stored(store: RuntimeStore, runtime_id: str) -> None:
    stored = await store.load_runtime(runtime_id)
    assert stored.row is None, f"a runtime row was written for {runtime_id}"
    assert await store.list_inputs(runtime_id) == []


def tolerant(harness: Harness) -> Harness:
    """A driver on the same stores that lets destroy tombstone unknown runtimes."""
    return Harness(harness.inner_store, harness.inner_blobs, destroy_unknown_runtimes=True)


# -- commands for runtimes that do not exist --------------------------------------------------


@pytest.mark.parametrize("command_type", COMMAND_TYPES)
async def test_a_command_for_an_unknown_runtime_is_refused_without_a_row(
    harness: Harness, command_type: str
) -> None:
    runtime_id = new_runtime_id()

    outcome = await harness.apply_command(runtime_id, make_command(command_type))

    assert isinstance(outcome, Rejected)
    assert isinstance(outcome.reason, RuntimeUnknown)
    assert outcome.reason.command_type == command_type
    await assert_not_stored(harness.inner_store, runtime_id)
    assert await harness.event_codes(runtime_id) == [EventCode.COMMAND_REJECTED]


async def test_an_unknown_runtime_stays_unknown_after_many_commands(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    for command_type in ("destroy", "stop", "retire", "reset") * 3:
        await harness.apply_command(runtime_id, make_command(command_type))

    await assert_not_stored(harness.inner_store, runtime_id)
    # The id is still free for the runtime that will really use it.
    assert isinstance(await harness.accept_input(runtime_id, prompt()), Accepted)


async def test_a_command_after_an_input_of_the_same_batch_applies(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    async with harness.driver.transaction() as batch:
        await batch.accept_input(runtime_id, prompt())
        decision = await batch.apply_command(runtime_id, make_command("retire"))
        await batch.commit()

    assert isinstance(decision.outcome, CommandCompleted)
    stored = await harness.inner_store.load_runtime(runtime_id)
    assert stored.row is not None
    assert stored.row.phase is RuntimePhase.RETIRED


async def test_a_command_for_a_stored_runtime_applies(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    await harness.accept_input(runtime_id, prompt())

    outcome = await harness.restart().apply_command(runtime_id, make_command("stop"))

    assert isinstance(outcome, CommandCompleted)
    assert outcome.state is RuntimePhase.STOPPED


async def test_destroy_tombstones_an_unknown_runtime_when_allowed(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    driver = tolerant(harness)

    outcome = await driver.apply_command(runtime_id, make_command("destroy"))

    assert isinstance(outcome, CommandCompleted)
    stored = await harness.inner_store.load_runtime(runtime_id)
    assert stored.row is not None
    assert stored.row.phase is RuntimePhase.DESTROYED
    assert await harness.restart().accept_input(runtime_id, prompt()) == Rejected(
        reason=RuntimeDestroyed()
    )


@pytest.mark.parametrize("command_type", [c for c in COMMAND_TYPES if c != "destroy"])
async def test_only_destroy_is_allowed_on_an_unknown_runtime(
    harness: Harness, command_type: str
) -> None:
    runtime_id = new_runtime_id()

    outcome = await tolerant(harness).apply_command(runtime_id, make_command(command_type))

    assert isinstance(outcome, Rejected)
    assert isinstance(outcome.reason, RuntimeUnknown)
    await assert_not_stored(harness.inner_store, runtime_id)


# -- no rejection creates a runtime -----------------------------------------------------------


@pytest.mark.parametrize("command", [False, True], ids=["input", "command"])
async def test_refusing_a_malformed_message_writes_no_row(harness: Harness, command: bool) -> None:
    runtime_id = new_runtime_id()
    async with harness.driver.transaction() as batch:
        decision = await batch.refuse(
            runtime_id, Malformed(detail="not strict JSON"), subject=uuid4(), command=command
        )
        await batch.commit()

    assert decision.outcome == Rejected(reason=Malformed(detail="not strict JSON"))
    await assert_not_stored(harness.inner_store, runtime_id)
    code = EventCode.COMMAND_REJECTED if command else EventCode.INPUT_REJECTED
    assert await harness.event_codes(runtime_id) == [code]


async def test_a_rejected_input_for_an_unknown_runtime_writes_no_row(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    broken = prompt(images=(inline_image(ImageMediaType.GIF, IMAGE_BYTES[ImageMediaType.PNG]),))

    outcome = await harness.accept_input(runtime_id, broken)

    assert isinstance(outcome, Rejected)
    await assert_not_stored(harness.inner_store, runtime_id)


# -- references to stored images ----------------------------------------------------------------


def blob_reference(blob_id: str) -> BlobImageBlock:
    return BlobImageBlock(media_type=ImageMediaType.PNG, blob_id=blob_id)


async def test_a_reference_to_a_missing_blob_is_refused(image_harness: Harness) -> None:
    runtime_id = new_runtime_id()
    missing = "sha256:" + "0" * 64

    outcome = await image_harness.accept_input(
        runtime_id, prompt(images=(blob_reference(missing),))
    )

    assert isinstance(outcome, Rejected)
    assert isinstance(outcome.reason, ImageInvalid)
    assert missing in outcome.reason.detail
    await assert_not_stored(image_harness.inner_store, runtime_id)


async def test_a_reference_to_a_stored_blob_is_accepted(image_harness: Harness) -> None:
    runtime_id = new_runtime_id()
    blob_id = await image_harness.inner_blobs.put_image("image/png", PNG)
    item = prompt(images=(blob_reference(blob_id),))

    outcome = await image_harness.accept_input(runtime_id, item)

    assert isinstance(outcome, Accepted)
    stored = await image_harness.inner_store.get_input(runtime_id, item.header.id)
    assert stored is not None
    assert stored.payload == item


async def test_one_missing_blob_among_several_refuses_the_input(image_harness: Harness) -> None:
    runtime_id = new_runtime_id()
    present = await image_harness.inner_blobs.put_image("image/png", PNG)
    missing = "sha256:" + "1" * 64
    item = prompt(images=(blob_reference(present), blob_reference(missing)))

    outcome = await image_harness.accept_input(runtime_id, item)

    assert isinstance(outcome, Rejected)
    assert isinstance(outcome.reason, ImageInvalid)
    assert missing in outcome.reason.detail


async def test_a_blob_put_earlier_in_the_same_batch_counts(image_harness: Harness) -> None:
    runtime_id = new_runtime_id()
    inline = inline_image()
    first = prompt(images=(inline,))
    reference = blob_reference(blob_id_for(inline.media_type.value, inline.data))
    async with image_harness.driver.transaction() as batch:
        await batch.accept_input(runtime_id, first)
        decision = await batch.accept_input(runtime_id, prompt(images=(reference,)))
        await batch.commit()

    assert isinstance(decision.outcome, Accepted)
    assert await image_harness.inner_blobs.exists(reference.blob_id)


async def test_a_blob_store_outage_is_transient_not_a_rejection(image_harness: Harness) -> None:
    runtime_id = new_runtime_id()
    blob_id = await image_harness.inner_blobs.put_image("image/png", PNG)
    item = prompt(images=(blob_reference(blob_id),))
    image_harness.blobs.fail_next("exists")

    with pytest.raises(StoreUnavailable):
        await image_harness.accept_input(runtime_id, item)

    await assert_not_stored(image_harness.inner_store, runtime_id)
    assert await image_harness.event_codes(runtime_id) == []
    assert isinstance(await image_harness.accept_input(runtime_id, item), Accepted)


async def test_a_duplicate_needs_no_blob_lookup(image_harness: Harness) -> None:
    runtime_id = new_runtime_id()
    blob_id = await image_harness.inner_blobs.put_image("image/png", PNG)
    item = prompt(images=(blob_reference(blob_id),))
    await image_harness.accept_input(runtime_id, item)
    lookups = image_harness.blobs.plan.calls["exists"]

    await image_harness.accept_input(runtime_id, item)

    assert image_harness.blobs.plan.calls["exists"] == lookups

