"""Admission (DOMAIN.md §3): gate, validation, dedupe, coalescing, lanes, signals, images.

Every call goes through :func:`decide` or :func:`refuse`, which also check that the runtime
handed in is exactly as it was (a deep copy is taken before the call).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from uuid import UUID

import pytest

from schemas import (
    Accepted,
    AnyInput,
    BlobImageBlock,
    Deduplicated,
    Durability,
    DurabilityViolation,
    ExternalEventInput,
    HandlingMode,
    ImageInvalid,
    ImageMediaType,
    InlineImageBlock,
    InputKind,
    InputPhase,
    InputRejected,
    Lane,
    Limits,
    NotReady,
    PeerHandlingModeInvalid,
    PeerInput,
    PeerResponseProgress,
    PromptInput,
    Rejected,
    RejectReason,
    RuntimeDestroyed,
    RuntimePhase,
    TextBlock,
    TooLarge,
    blob_id_for,
)
from schemas.validation import content_blocks
from tests.unit.core_factories import (
    admit,
    assert_unchanged,
    command,
    event_codes,
    idle_runtime,
    make_context,
    make_input,
    new_input_id,
    new_runtime_id,
    put_inputs,
    put_runtime,
    runtime_image,
    stage,
)
from tests.unit.images import inline_image
from worker.core import (
    BlobWrite,
    Context,
    Decision,
    PutInput,
    Runtime,
    Signal,
    accept_input,
    admission_signal,
    lane_for,
    reject_input,
    take_signal,
)
from worker.core.admission import externalize_images

pytestmark = pytest.mark.unit

K = InputKind
STEER, QUEUE = HandlingMode.STEER, HandlingMode.QUEUE

# DOMAIN.md §7 known answer.
KNOWN_DATA = "iVBORw0KGgo="
KNOWN_BLOB = "sha256:37ecc430eadc708f3fbefa16496b3303baced1942eb4ca298422a5b90d1b8f2d"


@pytest.fixture
def ctx() -> Context:
    return make_context()


def decide(runtime: Runtime, item: AnyInput, ctx: Context, **kwargs: Any) -> Decision:
    image = runtime_image(runtime)
    decision = accept_input(runtime, item, ctx, **kwargs)
    assert_unchanged(runtime, image)
    return decision


def refuse(runtime: Runtime, item: AnyInput, ctx: Context, **kwargs: Any) -> RejectReason:
    image = runtime_image(runtime)
    with pytest.raises(InputRejected) as exc:
        accept_input(runtime, item, ctx, **kwargs)
    assert_unchanged(runtime, image)
    return exc.value.reason


def accepted(decision: Decision) -> Accepted:
    assert isinstance(decision.outcome, Accepted)
    return decision.outcome


def running_runtime(ctx: Context) -> Runtime:
    runtime, _ = stage(idle_runtime(ctx, make_input(K.PROMPT)), ctx)
    assert runtime.phase is RuntimePhase.RUNNING
    return runtime


# --- lanes -----------------------------------------------------------------------------------

# (kind, handling mode given) -> lane, DOMAIN.md §3.
LANES: list[tuple[InputKind, HandlingMode | None, Lane]] = [
    *[
        (kind, mode, Lane.STEER if mode is STEER else Lane.QUEUE)
        for kind in (K.PROMPT, K.PEER_MESSAGE, K.PEER_REQUEST, K.PEER_RESPONSE_TERMINAL)
        for mode in (None, QUEUE, STEER)
    ],
    (K.PEER_RESPONSE_PROGRESS, None, Lane.STEER),
    (K.FLOW_STEP, None, Lane.QUEUE),
    (K.EXTERNAL_EVENT, None, Lane.QUEUE),
    (K.EXTERNAL_EVENT, QUEUE, Lane.QUEUE),
    (K.EXTERNAL_EVENT, STEER, Lane.STEER),
    (K.CONTINUATION, None, Lane.QUEUE),
    (K.CONTINUATION, QUEUE, Lane.QUEUE),
    (K.CONTINUATION, STEER, Lane.STEER),
]


def test_every_kind_has_a_lane_rule() -> None:
    assert {kind for kind, _, _ in LANES} == set(InputKind) - {K.OPERATION}


@pytest.mark.parametrize(("kind", "mode", "lane"), LANES)
def test_lane_per_kind(
    kind: InputKind, mode: HandlingMode | None, lane: Lane, ctx: Context
) -> None:
    item = make_input(kind, mode=mode)
    assert lane_for(item, kind) is lane
    decision = decide(idle_runtime(ctx), item, ctx)
    outcome = accepted(decision)
    assert (outcome.phase, outcome.lane) == (InputPhase.QUEUED, lane)
    record = decision.runtime.inputs[item.header.id]
    assert (record.kind, record.lane, record.phase) == (kind, lane, InputPhase.QUEUED)
    assert decision.runtime.lane(lane) == [record]


# --- signals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "kind", "mode", "signal"),
    [
        (RuntimePhase.IDLE, K.PROMPT, None, Signal.WAKE),
        (RuntimePhase.IDLE, K.PEER_MESSAGE, None, Signal.WAKE),
        (RuntimePhase.IDLE, K.EXTERNAL_EVENT, None, Signal.WAKE),
        (RuntimePhase.IDLE, K.PROMPT, STEER, Signal.IMMEDIATE),
        (RuntimePhase.IDLE, K.CONTINUATION, STEER, Signal.IMMEDIATE),
        (RuntimePhase.IDLE, K.PEER_RESPONSE_PROGRESS, None, Signal.NONE),
        (RuntimePhase.RUNNING, K.PEER_MESSAGE, None, Signal.INTERRUPT),
        (RuntimePhase.RUNNING, K.PEER_REQUEST, None, Signal.INTERRUPT),
        (RuntimePhase.RUNNING, K.PROMPT, STEER, Signal.INTERRUPT),
        (RuntimePhase.RUNNING, K.EXTERNAL_EVENT, STEER, Signal.INTERRUPT),
        (RuntimePhase.RUNNING, K.PEER_RESPONSE_PROGRESS, None, Signal.NONE),
        (RuntimePhase.RUNNING, K.PROMPT, None, Signal.NONE),
        (RuntimePhase.RUNNING, K.FLOW_STEP, None, Signal.NONE),
        (RuntimePhase.RUNNING, K.PEER_RESPONSE_TERMINAL, None, Signal.WAKE),
    ],
)
def test_admission_signal(
    phase: RuntimePhase, kind: InputKind, mode: HandlingMode | None, signal: Signal, ctx: Context
) -> None:
    item = make_input(kind, mode=mode)
    assert admission_signal(phase, kind, lane_for(item, kind)) is signal
    runtime = running_runtime(ctx) if phase is RuntimePhase.RUNNING else idle_runtime(ctx)
    assert runtime.signal is Signal.NONE
    assert decide(runtime, item, ctx).runtime.signal is signal


def test_attached_wakes_like_idle(ctx: Context) -> None:
    runtime = dataclasses.replace(idle_runtime(ctx), phase=RuntimePhase.ATTACHED)
    assert decide(runtime, make_input(K.PROMPT), ctx).runtime.signal is Signal.WAKE


def test_strongest_signal_wins_until_taken(ctx: Context) -> None:
    runtime = idle_runtime(ctx)
    steps = [
        (make_input(K.PEER_RESPONSE_PROGRESS), Signal.NONE),
        (make_input(K.PROMPT), Signal.WAKE),
        (make_input(K.PROMPT, mode=STEER), Signal.IMMEDIATE),
        (make_input(K.PROMPT), Signal.IMMEDIATE),
        (make_input(K.PEER_RESPONSE_PROGRESS), Signal.IMMEDIATE),
    ]
    for item, expected in steps:
        runtime = decide(runtime, item, ctx).runtime
        assert runtime.signal is expected
    image = runtime_image(runtime)
    cleared, taken = take_signal(runtime)
    assert_unchanged(runtime, image)
    assert (taken, cleared.signal) == (Signal.IMMEDIATE, Signal.NONE)
    assert cleared.version == runtime.version  # the signal is never persisted
    assert decide(cleared, make_input(K.PROMPT), ctx).runtime.signal is Signal.WAKE


def test_operation_leaves_the_signal_alone(ctx: Context) -> None:
    runtime = idle_runtime(ctx)
    assert decide(runtime, make_input(K.OPERATION), ctx).runtime.signal is Signal.NONE


# --- dedupe ----------------------------------------------------------------------------------


def assert_deduplicated(
    decision: Decision, runtime: Runtime, item: AnyInput, existing: UUID
) -> None:
    assert decision.outcome == Deduplicated(input_id=item.header.id, existing_id=existing)
    assert decision.mutations == ()
    assert decision.blobs == ()
    assert decision.runtime is runtime
    assert event_codes(decision) == ["input.deduplicated"]
    note = decision.events[0]
    assert note.data == {"input_id": str(item.header.id), "existing_id": str(existing)}
    assert note.causation_id == item.header.id


def test_same_input_id_in_memory(ctx: Context) -> None:
    item = make_input(K.PROMPT)
    runtime = admit(idle_runtime(ctx), item, ctx)
    again = make_input(K.PROMPT, input_id=item.header.id, content="different body")
    assert_deduplicated(decide(runtime, again, ctx), runtime, again, item.header.id)


def test_same_idempotency_key_in_memory(ctx: Context) -> None:
    first = make_input(K.PROMPT, idempotency_key="order-17")
    runtime = admit(idle_runtime(ctx), first, ctx)
    second = make_input(K.PEER_MESSAGE, idempotency_key="order-17")
    assert_deduplicated(decide(runtime, second, ctx), runtime, second, first.header.id)


def test_key_of_a_terminal_input_still_dedupes(ctx: Context) -> None:
    first = make_input(K.OPERATION, idempotency_key="op-key")
    runtime = admit(idle_runtime(ctx), first, ctx)
    assert runtime.inputs[first.header.id].phase is InputPhase.CONSUMED
    second = make_input(K.PROMPT, idempotency_key="op-key")
    assert_deduplicated(decide(runtime, second, ctx), runtime, second, first.header.id)


def test_stored_id_match(ctx: Context) -> None:
    runtime = idle_runtime(ctx)
    item = make_input(K.PROMPT)
    decision = decide(runtime, item, ctx, stored_match=item.header.id)
    assert_deduplicated(decision, runtime, item, item.header.id)


def test_stored_key_match(ctx: Context) -> None:
    runtime = idle_runtime(ctx)
    stored = new_input_id()
    item = make_input(K.PROMPT, idempotency_key="archived-key")
    assert_deduplicated(decide(runtime, item, ctx, stored_match=stored), runtime, item, stored)


@pytest.mark.parametrize("ending", ["retire", "stop", "destroy"])
def test_redelivery_is_a_duplicate_whatever_the_phase(ending: str, ctx: Context) -> None:
    """A known input id is recognised before the gate (admission.py's documented choice)."""
    item = make_input(K.PROMPT)
    runtime = command(admit(idle_runtime(ctx), item, ctx), ending, ctx)
    assert_deduplicated(decide(runtime, item, ctx), runtime, item, item.header.id)
    stored = make_input(K.PROMPT)
    decision = decide(runtime, stored, ctx, stored_match=stored.header.id)
    assert_deduplicated(decision, runtime, stored, stored.header.id)


def test_key_dedupe_comes_after_the_gate(ctx: Context) -> None:
    first = make_input(K.PROMPT, idempotency_key="late")
    runtime = command(admit(idle_runtime(ctx), first, ctx), "retire", ctx)
    second = make_input(K.PROMPT, idempotency_key="late")
    assert refuse(runtime, second, ctx) == NotReady(state=RuntimePhase.RETIRED)


def test_key_dedupe_comes_after_validation(ctx: Context) -> None:
    first = make_input(K.PROMPT, idempotency_key="k")
    runtime = admit(idle_runtime(ctx), first, ctx)
    bad = make_input(K.PROMPT, idempotency_key="k", durability=Durability.DERIVED)
    assert isinstance(refuse(runtime, bad, ctx), DurabilityViolation)


# --- phase gate and validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        ("retire", NotReady(state=RuntimePhase.RETIRED)),
        ("stop", NotReady(state=RuntimePhase.STOPPED)),
        ("destroy", RuntimeDestroyed()),
    ],
)
def test_phase_gate(ending: str, reason: RejectReason, ctx: Context) -> None:
    runtime = command(idle_runtime(ctx, make_input(K.PROMPT)), ending, ctx)
    for kind in InputKind:
        assert refuse(runtime, make_input(kind), ctx) == reason


def test_stored_initializing_runtime_is_not_ready(ctx: Context) -> None:
    runtime = Runtime(new_runtime_id(), version=2)
    assert refuse(runtime, make_input(), ctx) == NotReady(state=RuntimePhase.INITIALIZING)


def test_running_runtime_queues_for_the_next_turn(ctx: Context) -> None:
    runtime = running_runtime(ctx)
    item = make_input(K.PROMPT)
    decision = decide(runtime, item, ctx)
    assert accepted(decision).phase is InputPhase.QUEUED
    assert decision.runtime.phase is RuntimePhase.RUNNING
    assert decision.runtime.current_run == runtime.current_run


def _progress_with_mode() -> AnyInput:
    return PeerInput(
        header=make_input().header,
        convention=PeerResponseProgress(request_id="r", phase="p"),
        content="x",
        handling_mode=QUEUE,
    )


@pytest.mark.parametrize(
    ("build", "kwargs", "reason_type"),
    [
        (lambda: make_input(K.PROMPT, durability=Durability.DERIVED), {}, DurabilityViolation),
        (_progress_with_mode, {}, PeerHandlingModeInvalid),
        (lambda: make_input(K.PROMPT), {"message_bytes": 2048}, TooLarge),
        (
            lambda: make_input(
                K.PROMPT, content=[inline_image(ImageMediaType.PNG, raw=b"GIF89a....")]
            ),
            {},
            ImageInvalid,
        ),
    ],
)
def test_validation_errors_propagate(
    build: Any, kwargs: dict[str, Any], reason_type: type, ctx: Context
) -> None:
    runtime = Runtime(new_runtime_id())
    limits = Limits(max_message_bytes=1024)
    assert isinstance(refuse(runtime, build(), ctx, limits=limits, **kwargs), reason_type)


# --- coalescing and supersession -------------------------------------------------------------


def test_progress_coalesces_into_the_newer(ctx: Context) -> None:
    old = make_input(K.PEER_RESPONSE_PROGRESS, supersession_key="req-1")
    runtime = admit(idle_runtime(ctx), old, ctx)
    new = make_input(K.PEER_RESPONSE_PROGRESS, supersession_key="req-1")
    decision = decide(runtime, new, ctx)
    replaced = decision.runtime.inputs[old.header.id]
    assert replaced.phase is InputPhase.COALESCED
    assert replaced.aggregate_id == new.header.id
    assert replaced.history[-1].from_phase is InputPhase.QUEUED
    assert [(r.input_id, r.phase) for r in put_inputs(decision)] == [
        (old.header.id, InputPhase.COALESCED),
        (new.header.id, InputPhase.QUEUED),
    ]
    assert [m.insert for m in decision.mutations if isinstance(m, PutInput)] == [False, True]
    assert "input.coalesced" in event_codes(decision)
    assert decision.runtime.lane(Lane.STEER) == [decision.runtime.inputs[new.header.id]]


def test_external_event_supersedes_the_older(ctx: Context) -> None:
    old = make_input(K.EXTERNAL_EVENT, supersession_key="repo/main")
    runtime = admit(idle_runtime(ctx), old, ctx)
    new = make_input(K.EXTERNAL_EVENT, supersession_key="repo/main")
    decision = decide(runtime, new, ctx)
    replaced = decision.runtime.inputs[old.header.id]
    assert replaced.phase is InputPhase.SUPERSEDED
    assert replaced.superseded_by == new.header.id
    assert "input.superseded" in event_codes(decision)
    assert decision.runtime.lane(Lane.QUEUE) == [decision.runtime.inputs[new.header.id]]


def test_a_chain_replaces_only_the_queued_one(ctx: Context) -> None:
    items = [make_input(K.PEER_RESPONSE_PROGRESS, supersession_key="k") for _ in range(3)]
    runtime = admit(admit(idle_runtime(ctx), items[0], ctx), items[1], ctx)
    decision = decide(runtime, items[2], ctx)
    assert [r.input_id for r in put_inputs(decision)] == [items[1].header.id, items[2].header.id]
    assert decision.runtime.inputs[items[0].header.id].aggregate_id == items[1].header.id


P, E = K.PEER_RESPONSE_PROGRESS, K.EXTERNAL_EVENT


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((P, "a"), (P, "b")),
        ((E, "a"), (E, "b")),
        ((E, "a"), (P, "a")),
        ((P, "a"), (E, "a")),
        ((K.PROMPT, "a"), (K.PROMPT, "a")),
        ((K.CONTINUATION, "a"), (K.CONTINUATION, "a")),
        ((E, None), (E, None)),
        ((P, None), (P, None)),
    ],
)
def test_no_match_no_replacement(
    first: tuple[InputKind, str | None], second: tuple[InputKind, str | None], ctx: Context
) -> None:
    """Only the same (kind, supersession key) replaces, and only for the two kinds that do."""
    old = make_input(first[0], supersession_key=first[1])
    new = make_input(second[0], supersession_key=second[1])
    runtime = admit(idle_runtime(ctx), old, ctx)
    decision = decide(runtime, new, ctx)
    assert [r.input_id for r in put_inputs(decision)] == [new.header.id]
    assert decision.runtime.inputs[old.header.id].phase is InputPhase.QUEUED


def test_a_staged_input_is_not_replaced(ctx: Context) -> None:
    old = make_input(K.EXTERNAL_EVENT, supersession_key="k")
    runtime, _ = stage(idle_runtime(ctx, old), ctx)
    decision = decide(runtime, make_input(K.EXTERNAL_EVENT, supersession_key="k"), ctx)
    assert decision.runtime.inputs[old.header.id].phase is InputPhase.STAGED
    assert len(put_inputs(decision)) == 1


# --- accepting -------------------------------------------------------------------------------


def test_operation_is_consumed_on_accept(ctx: Context) -> None:
    runtime = idle_runtime(ctx)
    item = make_input(K.OPERATION)
    decision = decide(runtime, item, ctx)
    outcome = accepted(decision)
    assert (outcome.phase, outcome.lane) == (InputPhase.CONSUMED, None)
    record = decision.runtime.inputs[item.header.id]
    assert [(h.from_phase, h.to_phase) for h in record.history] == [
        (None, InputPhase.QUEUED),
        (InputPhase.QUEUED, InputPhase.CONSUMED),
    ]
    assert event_codes(decision) == ["input.accepted", "input.consumed"]
    assert put_inputs(decision) == [record]
    assert decision.runtime.lane(Lane.QUEUE) == []


def test_accept_writes_one_new_row_and_its_events(ctx: Context) -> None:
    runtime = idle_runtime(ctx)
    item = make_input(K.PROMPT, correlation_id="corr-9")
    decision = decide(runtime, item, ctx)
    assert accepted(decision) == Accepted(
        input_id=item.header.id, phase=InputPhase.QUEUED, lane=Lane.QUEUE, admission_seq=1
    )
    assert put_runtime(decision).expected_version == runtime.version
    assert decision.runtime.version == runtime.version + 1
    assert [(type(m).__name__) for m in decision.mutations] == ["PutRuntime", "PutInput"]
    assert event_codes(decision) == ["input.accepted", "input.queued"]
    for note in decision.events:
        assert (note.causation_id, note.correlation_id) == (item.header.id, "corr-9")
        assert note.at == ctx.now


def test_admission_seq_strictly_increases(ctx: Context) -> None:
    runtime = idle_runtime(ctx)
    seen: list[int] = []
    for kind in [*InputKind, *InputKind]:
        mode = None if kind is K.PEER_RESPONSE_PROGRESS else STEER
        decision = decide(runtime, make_input(kind, mode=mode if len(seen) % 2 else None), ctx)
        seen.append(accepted(decision).admission_seq)
        runtime = decision.runtime
    assert seen == sorted(set(seen))
    assert runtime.next_admission_seq == seen[-1] + 1


def test_first_message_creates_the_runtime(ctx: Context) -> None:
    runtime = Runtime(new_runtime_id())
    decision = decide(runtime, make_input(K.PROMPT), ctx)
    assert event_codes(decision)[0] == "runtime.state_changed"
    assert decision.events[0].data == {"from": "initializing", "to": "idle"}
    row = put_runtime(decision)
    assert row.expected_version == 0
    assert (row.row.version, row.row.phase) == (1, RuntimePhase.IDLE)
    assert decision.runtime.phase is RuntimePhase.IDLE
    following = decide(decision.runtime, make_input(K.PROMPT), ctx)
    assert "runtime.state_changed" not in event_codes(following)
    assert put_runtime(following).expected_version == 1


# --- images ----------------------------------------------------------------------------------


def _inline_blocks(item: AnyInput) -> list[InlineImageBlock]:
    return [b for b in content_blocks(item) if isinstance(b, InlineImageBlock)]


def test_known_blob_address(ctx: Context) -> None:
    image = InlineImageBlock(media_type=ImageMediaType.PNG, data=KNOWN_DATA)
    item = make_input(K.PROMPT, content=[TextBlock(text="look"), image])
    decision = decide(Runtime(new_runtime_id()), item, ctx)
    assert decision.blobs == (BlobWrite(KNOWN_BLOB, "image/png", KNOWN_DATA),)
    stored = decision.runtime.inputs[item.header.id].payload
    assert isinstance(stored, PromptInput)
    assert stored.content == [
        TextBlock(text="look"),
        BlobImageBlock(media_type=ImageMediaType.PNG, blob_id=KNOWN_BLOB),
    ]
    assert put_inputs(decision)[0].payload == stored


@pytest.mark.parametrize(
    "build",
    [
        lambda blocks: make_input(K.PROMPT, content=blocks),
        lambda blocks: make_input(K.PEER_MESSAGE, content=blocks),
        lambda blocks: make_input(K.FLOW_STEP, content=blocks),
        lambda blocks: ExternalEventInput(
            header=make_input().header, event_type="shot", payload={}, blocks=blocks
        ),
    ],
)
def test_images_are_externalized(build: Any, ctx: Context) -> None:
    images = [inline_image(media) for media in ImageMediaType]
    item = build([TextBlock(text="see"), *images])
    decision = decide(idle_runtime(ctx), item, ctx)
    expected = [
        BlobWrite(blob_id_for(i.media_type.value, i.data), i.media_type.value, i.data)
        for i in images
    ]
    assert list(decision.blobs) == expected
    stored = put_inputs(decision)[0].payload
    assert _inline_blocks(stored) == []
    assert "inline" not in stored.model_dump_json()
    assert _inline_blocks(item) == images  # the message itself is untouched


def test_text_only_input_needs_no_blobs() -> None:
    item = make_input(K.PROMPT, content="just words")
    assert externalize_images(item) == (item, [])


def test_reject_input_leaves_a_trace_and_changes_nothing(ctx: Context) -> None:
    runtime = command(idle_runtime(ctx), "stop", ctx)
    item = make_input(K.PROMPT, correlation_id="corr-r")
    reason = refuse(runtime, item, ctx)
    decision = reject_input(
        runtime, ctx, input_id=item.header.id, reason=reason, correlation_id="corr-r"
    )
    assert (decision.runtime, decision.mutations, decision.blobs) == (runtime, (), ())
    assert decision.outcome == Rejected(reason=reason)
    assert event_codes(decision) == ["input.rejected"]
    note = decision.events[0]
    assert note.data == {"input_id": str(item.header.id), "reason": reason.model_dump(mode="json")}
    assert (note.causation_id, note.correlation_id) == (item.header.id, "corr-r")
