"""Admission validation (DOMAIN.md §2): every broken rule is a typed rejection, never a crash."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    DEFAULT_LIMITS,
    AnyInput,
    ContinuationInput,
    Durability,
    DurabilityViolation,
    ExternalEventInput,
    ExternalSource,
    FlowSource,
    FlowStepInput,
    HandlingMode,
    ImageInvalid,
    ImageMediaType,
    InlineImageBlock,
    InputHeader,
    InputKind,
    InputRejected,
    Limits,
    OperationInput,
    OperatorSource,
    PayloadInvalid,
    PeerHandlingModeInvalid,
    PeerInput,
    PeerMessage,
    PeerRequest,
    PeerResponseProgress,
    PeerResponseTerminal,
    PeerResponseTerminalInvalid,
    PeerSource,
    PromptInput,
    Rejected,
    RejectReason,
    Reply,
    SystemSource,
    TextBlock,
    TooLarge,
    blob_id_for,
    input_kind,
    validate_input,
)
from schemas.inputs import InputSource
from schemas.validation import decode_image
from tests.unit.images import IMAGE_BYTES, b64, inline_image, padded, png_bytes

pytestmark = pytest.mark.unit

MiB = 1024 * 1024

ORIGINS: dict[str, InputSource] = {
    "operator": OperatorSource(),
    "peer": PeerSource(peer_id="peer-7", runtime_id="rt:peer:7"),
    "flow": FlowSource(flow_id="flow-1", step_index=2),
    "system": SystemSource(),
    "external": ExternalSource(source_name="github"),
}

DERIVED_KINDS = {
    InputKind.EXTERNAL_EVENT,
    InputKind.PEER_RESPONSE_PROGRESS,
    InputKind.CONTINUATION,
    InputKind.OPERATION,
}


def header(
    source: InputSource | None = None, durability: Durability = Durability.DURABLE
) -> InputHeader:
    return InputHeader(
        id=UUID("0190e4a8-7c2b-7d3e-8f00-0123456789ab"),
        timestamp=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        source=source or OperatorSource(),
        durability=durability,
    )


def peer(convention: Any, head: InputHeader | None = None, **body: Any) -> PeerInput:
    return PeerInput(header=head or header(), convention=convention, content="hi", **body)


KIND_BUILDERS: dict[InputKind, Callable[[InputHeader], AnyInput]] = {
    InputKind.PROMPT: lambda h: PromptInput(header=h, content="hello"),
    InputKind.PEER_MESSAGE: lambda h: peer(PeerMessage(), h),
    InputKind.PEER_REQUEST: lambda h: peer(PeerRequest(request_id="r-1", intent="review"), h),
    InputKind.PEER_RESPONSE_PROGRESS: lambda h: peer(
        PeerResponseProgress(request_id="r-1", phase="halfway"), h
    ),
    InputKind.PEER_RESPONSE_TERMINAL: lambda h: peer(
        PeerResponseTerminal(request_id="r-1", status="completed"), h
    ),
    InputKind.FLOW_STEP: lambda h: FlowStepInput(header=h, step_id="s-1", content="go"),
    InputKind.EXTERNAL_EVENT: lambda h: ExternalEventInput(
        header=h, event_type="push", payload={"ref": "main"}
    ),
    InputKind.CONTINUATION: lambda h: ContinuationInput(header=h, reason="tool result"),
    InputKind.OPERATION: lambda h: OperationInput(header=h, operation_id="op-1", event={}),
}


def prompt_with(blocks: list[InlineImageBlock]) -> PromptInput:
    return PromptInput(header=header(), content=[TextBlock(text="look"), *blocks])


def rejection(item: AnyInput, limits: Limits = DEFAULT_LIMITS, **kwargs: Any) -> RejectReason:
    """The reason ``validate_input`` rejects ``item`` with; it must reject it."""
    with pytest.raises(InputRejected) as exc:
        validate_input(item, limits, **kwargs)
    return exc.value.reason


def test_every_kind_has_a_builder() -> None:
    assert set(KIND_BUILDERS) == set(InputKind)


class TestDurability:
    @pytest.mark.parametrize("origin", list(ORIGINS))
    @pytest.mark.parametrize("kind", list(InputKind))
    def test_derived_matrix(self, kind: InputKind, origin: str) -> None:
        item = KIND_BUILDERS[kind](header(ORIGINS[origin], Durability.DERIVED))
        if kind in DERIVED_KINDS and origin in ("flow", "system"):
            validate_input(item)
        else:
            reason = rejection(item)
            assert isinstance(reason, DurabilityViolation)
            assert reason.reject_type == "durability_violation"

    @pytest.mark.parametrize("durability", [Durability.DURABLE, Durability.EPHEMERAL])
    @pytest.mark.parametrize("origin", list(ORIGINS))
    @pytest.mark.parametrize("kind", list(InputKind))
    def test_durable_and_ephemeral_are_legal_everywhere(
        self, kind: InputKind, origin: str, durability: Durability
    ) -> None:
        validate_input(KIND_BUILDERS[kind](header(ORIGINS[origin], durability)))

    def test_violation_names_the_kind_and_the_origin(self) -> None:
        by_kind = rejection(KIND_BUILDERS[InputKind.PROMPT](header(SystemSource(),
                                                                   Durability.DERIVED)))
        assert isinstance(by_kind, DurabilityViolation)
        assert "prompt" in by_kind.detail
        by_origin = rejection(KIND_BUILDERS[InputKind.OPERATION](header(OperatorSource(),
                                                                        Durability.DERIVED)))
        assert isinstance(by_origin, DurabilityViolation)
        assert "operator" in by_origin.detail


class TestPeerRules:
    @pytest.mark.parametrize("mode", list(HandlingMode))
    def test_response_progress_refuses_a_handling_mode(self, mode: HandlingMode) -> None:
        item = peer(PeerResponseProgress(request_id="r-1", phase="p"), handling_mode=mode)
        assert isinstance(rejection(item), PeerHandlingModeInvalid)

    @pytest.mark.parametrize(
        "convention",
        [PeerMessage(), PeerRequest(request_id="r-1", intent="i"),
         PeerResponseTerminal(request_id="r-1", status="failed")],
        ids=["message", "request", "response_terminal"],
    )
    def test_other_conventions_take_a_handling_mode(self, convention: Any) -> None:
        validate_input(peer(convention, handling_mode=HandlingMode.STEER))

    @pytest.mark.parametrize("request_id", ["", " ", "\t\n"], ids=["empty", "space", "blank"])
    def test_response_terminal_needs_a_request_id(self, request_id: str) -> None:
        item = peer(PeerResponseTerminal(request_id=request_id, status="completed"))
        reason = rejection(item)
        assert isinstance(reason, PeerResponseTerminalInvalid)
        assert "request_id" in reason.detail

    @pytest.mark.parametrize("status", ["completed", "failed"])
    def test_response_terminal_statuses(self, status: str) -> None:
        validate_input(peer(PeerResponseTerminal(request_id="r-1", status=status)))

    @pytest.mark.parametrize("status", ["cancelled", "", "Completed", "failed "])
    def test_response_terminal_refuses_other_statuses(self, status: str) -> None:
        item = peer(PeerResponseTerminal(request_id="r-1", status=status))
        reason = rejection(item)
        assert isinstance(reason, PeerResponseTerminalInvalid)
        assert "status" in reason.detail


class TestExternalEventPayload:
    def test_top_level_blocks_key_is_refused(self) -> None:
        item = ExternalEventInput(header=header(), event_type="push", payload={"blocks": []})
        assert isinstance(rejection(item), PayloadInvalid)

    @pytest.mark.parametrize(
        "payload",
        [{"data": {"blocks": []}}, [{"blocks": []}], "blocks", None, 3],
        ids=["nested", "list", "string", "null", "number"],
    )
    def test_blocks_elsewhere_is_fine(self, payload: Any) -> None:
        validate_input(ExternalEventInput(header=header(), event_type="push", payload=payload))


class TestSizeLimits:
    def test_message_at_the_limit_is_accepted(self) -> None:
        validate_input(prompt_with([]), message_bytes=8 * MiB)

    def test_message_over_the_limit(self) -> None:
        reason = rejection(prompt_with([]), message_bytes=8 * MiB + 1)
        assert reason == TooLarge(limit="message_bytes", actual=8 * MiB + 1, maximum=8 * MiB)

    def test_message_limit_is_configurable(self) -> None:
        reason = rejection(prompt_with([]), Limits(max_message_bytes=100), message_bytes=101)
        assert reason == TooLarge(limit="message_bytes", actual=101, maximum=100)

    def test_image_at_the_default_limit_is_accepted(self) -> None:
        validate_input(prompt_with([inline_image(raw=padded(png_bytes(), 5 * MiB))]))

    def test_image_over_the_default_limit(self) -> None:
        item = prompt_with([inline_image(raw=padded(png_bytes(), 5 * MiB + 1))])
        assert rejection(item) == TooLarge(
            limit="image_bytes", actual=5 * MiB + 1, maximum=5 * MiB
        )

    @pytest.mark.parametrize("media_type", list(ImageMediaType))
    def test_image_limit_is_configurable(self, media_type: ImageMediaType) -> None:
        limits = Limits(max_image_bytes=1000)
        raw = IMAGE_BYTES[media_type]
        validate_input(prompt_with([inline_image(media_type, padded(raw, 1000))]), limits)
        reason = rejection(prompt_with([inline_image(media_type, padded(raw, 1001))]), limits)
        assert reason == TooLarge(limit="image_bytes", actual=1001, maximum=1000)

    def test_far_oversized_image_is_refused_before_decoding(self) -> None:
        # Not base64 at all: only the length can have refused it.
        block = InlineImageBlock(media_type=ImageMediaType.PNG, data="!" * 4000)
        reason = rejection(prompt_with([block]), Limits(max_image_bytes=1000))
        assert isinstance(reason, TooLarge)
        assert reason.limit == "image_bytes"
        assert reason.maximum == 1000

    def test_max_images_is_accepted(self) -> None:
        validate_input(prompt_with([inline_image()] * 16))

    def test_more_images_than_allowed(self) -> None:
        reason = rejection(prompt_with([inline_image()] * 17))
        assert reason == TooLarge(limit="images", actual=17, maximum=16)

    def test_images_of_external_event_blocks_count(self) -> None:
        item = ExternalEventInput(header=header(), event_type="push", payload={},
                                  blocks=[inline_image()] * 3)
        reason = rejection(item, Limits(max_images=2))
        assert reason == TooLarge(limit="images", actual=3, maximum=2)

    def test_images_of_peer_content_are_checked(self) -> None:
        item = PeerInput(header=header(), content=[inline_image(ImageMediaType.GIF,
                                                                IMAGE_BYTES[ImageMediaType.PNG])])
        assert isinstance(rejection(item), ImageInvalid)


class TestImages:
    @pytest.mark.parametrize("media_type", list(ImageMediaType))
    def test_right_magic_is_accepted(self, media_type: ImageMediaType) -> None:
        block = inline_image(media_type)
        validate_input(prompt_with([block]))
        assert decode_image(block) == IMAGE_BYTES[media_type]

    @pytest.mark.parametrize(
        ("media_type", "bytes_of"), list(itertools.permutations(ImageMediaType, 2))
    )
    def test_another_types_bytes_are_refused(
        self, media_type: ImageMediaType, bytes_of: ImageMediaType
    ) -> None:
        item = prompt_with([inline_image(media_type, IMAGE_BYTES[bytes_of])])
        reason = rejection(item)
        assert isinstance(reason, ImageInvalid)
        assert media_type.value in reason.detail

    @pytest.mark.parametrize(
        "raw",
        [b"", b"GIF88a", b"RIFF\x00\x00\x00\x00WEBX", b"RIFF\x00\x00\x00\x00", b"\x89PNG"],
        ids=["empty", "gif-88a", "riff-not-webp", "short-riff", "short-png"],
    )
    def test_near_misses_are_refused(self, raw: bytes) -> None:
        for media_type in ImageMediaType:
            reason = rejection(prompt_with([inline_image(media_type, raw)]))
            assert isinstance(reason, ImageInvalid)

    def test_gif87a_is_accepted(self) -> None:
        raw = b"GIF87a" + IMAGE_BYTES[ImageMediaType.GIF][6:]
        validate_input(prompt_with([inline_image(ImageMediaType.GIF, raw)]))

    @pytest.mark.parametrize(
        "data",
        ["not base64!", "iVBORw0KGgo", "iVBOR w0KGgo=", "iVBORw0K\nGgo=", "====", "é"],
        ids=["punctuation", "no-padding", "space", "newline", "only-padding", "non-ascii"],
    )
    def test_invalid_base64(self, data: str) -> None:
        block = InlineImageBlock(media_type=ImageMediaType.PNG, data=data)
        reason = rejection(prompt_with([block]))
        assert isinstance(reason, ImageInvalid)
        assert "base64" in reason.detail

    def test_rejection_is_a_wire_reply(self) -> None:
        reason = rejection(prompt_with([InlineImageBlock(media_type=ImageMediaType.PNG,
                                                         data="@@@@")]))
        reply = Reply(correlation_id="c-1", runtime_id="rt:demo",
                      outcome=Rejected(reason=reason))
        assert Reply.model_validate_json(reply.model_dump_json()) == reply


class TestInputKind:
    @pytest.mark.parametrize("kind", list(InputKind))
    def test_each_kind_is_derived(self, kind: InputKind) -> None:
        assert input_kind(KIND_BUILDERS[kind](header())) is kind

    def test_peer_without_a_convention_is_a_message(self) -> None:
        assert input_kind(PeerInput(header=header(), content="hi")) is InputKind.PEER_MESSAGE


BLOB_ID = re.compile(r"^sha256:[0-9a-f]{64}$")


class TestBlobId:
    def test_known_answer(self) -> None:
        assert blob_id_for("image/png", "iVBORw0KGgo=") == (
            "sha256:37ecc430eadc708f3fbefa16496b3303baced1942eb4ca298422a5b90d1b8f2d"
        )

    def test_media_type_is_lower_cased(self) -> None:
        assert blob_id_for("IMAGE/PNG", "iVBORw0KGgo=") == blob_id_for("image/png", "iVBORw0KGgo=")

    def test_the_exact_base64_text_is_addressed(self) -> None:
        # Same bytes, different text: the address is of the text as sent.
        assert blob_id_for("image/png", "iVBORw0KGgo=") != blob_id_for("image/png", "iVBORw0KGgo")

    @settings(deadline=None)
    @given(
        data=st.text(),
        media_types=st.lists(st.sampled_from(list(ImageMediaType)), min_size=2, max_size=2,
                             unique=True),
    )
    def test_deterministic_well_formed_and_media_type_sensitive(
        self, data: str, media_types: list[ImageMediaType]
    ) -> None:
        first, second = media_types
        blob_id = blob_id_for(first.value, data)
        assert blob_id == blob_id_for(first.value, data)
        assert BLOB_ID.fullmatch(blob_id)
        assert blob_id != blob_id_for(second.value, data)

    @settings(deadline=None)
    @given(raw=st.binary(max_size=256))
    def test_base64_of_any_bytes_is_addressable(self, raw: bytes) -> None:
        assert BLOB_ID.fullmatch(blob_id_for(ImageMediaType.WEBP.value, b64(raw)))
