"""The history checks over hand-made facts: a consistent history passes, and every violation
is found (and only it) when the history is broken in that one way."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persistence.ports import OutboxEntry
from schemas import EventCode, EventEnvelope, InputPhase, RuntimePhase
from tests.contract.runtime_builders import NOW, completed, event, receipt, record, row
from worker.cli.dead_letters import DeadLetter
from worker.core.model import BoundaryReceipt, InputRecord
from worker.history.checks import VIOLATIONS, WARNINGS, _inversions, blob_ids_to_check, check
from worker.history.facts import Facts, Report, RuntimeFacts
from worker.history.published import PublishedRecord
from worker.history.report import render_text, report_json

pytestmark = pytest.mark.unit

RT, OTHER = "rt:history:a", "rt:history:b"


def blob() -> str:
    return "sha256:" + uuid4().hex + uuid4().hex


@dataclass
class Stored:
    inputs: list[InputRecord] = field(default_factory=list)
    receipts: list[BoundaryReceipt] = field(default_factory=list)
    outbox: list[OutboxEntry] = field(default_factory=list)
    commands: list[Any] = field(default_factory=list)
    phase: RuntimePhase = RuntimePhase.IDLE


@dataclass
class History:
    """A history built step by step the way a healthy worker would leave it."""

    published: list[PublishedRecord] = field(default_factory=list)
    stored: dict[str, Stored] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    present: set[str] = field(default_factory=set)
    captured: set[UUID] | None = None
    _positions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def publish(self, runtime_id: str, kind: str, **fields: Any) -> PublishedRecord:
        published = PublishedRecord.model_validate(
            {"seq": len(self.published), "runtime_id": runtime_id, "kind": kind, **fields}
        )
        self.published.append(published)
        self.stored.setdefault(runtime_id, Stored())
        return published

    def emit(self, runtime_id: str, envelope: EventEnvelope, *, sent: bool = True) -> None:
        entry = OutboxEntry(next(self._positions), envelope, sent)
        self.stored[runtime_id].outbox.append(entry)
        if self.captured is not None and sent:
            self.captured.add(envelope.event_id)

    def consumed_input(
        self,
        runtime_id: str = RT,
        *,
        key: str | None = None,
        images: int = 0,
        receipts: int = 1,
    ) -> tuple[PublishedRecord, InputRecord]:
        blob_ids = tuple(blob() for _ in range(images))
        stored = self.stored.setdefault(runtime_id, Stored())
        seq = len(stored.inputs) + 1
        kept = record(seq, phase=InputPhase.CONSUMED, key=key, blob_ids=blob_ids)
        published = self.publish(
            runtime_id,
            "input",
            message_id=str(kept.input_id),
            input_id=kept.input_id,
            input_type="prompt",
            idempotency_key=key,
            image_blob_ids=blob_ids,
        )
        stored.inputs.append(kept)
        self.present.update(blob_ids)
        for _ in range(receipts):
            stored.receipts.append(
                replace(
                    receipt(runtime_id, uuid4(), 1, seq), contributing_input_ids=(kept.input_id,)
                )
            )
        self.emit(runtime_id, event(runtime_id, EventCode.INPUT_ACCEPTED))
        self.emit(runtime_id, event(runtime_id, EventCode.INPUT_CONSUMED))
        return published, kept

    def completed_command(self, runtime_id: str = RT) -> PublishedRecord:
        outcome = completed("stop")
        self.stored.setdefault(runtime_id, Stored()).commands.append(outcome)
        self.emit(runtime_id, event(runtime_id, EventCode.COMMAND_COMPLETED))
        return self.publish(
            runtime_id,
            "command",
            message_id=str(outcome.command_id),
            command_id=outcome.command_id,
            command_type="stop",
        )

    def hostile(
        self,
        runtime_id: str = RT,
        *,
        message_id: str | None = "m-hostile",
        times: int = 1,
        error: str | None = "malformed: not JSON",
    ) -> PublishedRecord:
        published = self.publish(runtime_id, "hostile", message_id=message_id, expect="dead_letter")
        for _ in range(times):
            self.dead.append(dead_letter(runtime_id, message_id, error))
        return published

    def facts(self) -> Facts:
        runtimes = {
            rid: RuntimeFacts(
                runtime_id=rid,
                row=replace(row(rid, 3), phase=s.phase),
                inputs=tuple(sorted(s.inputs, key=lambda r: r.admission_seq)),
                receipts=tuple(s.receipts),
                commands=tuple(s.commands),
                outbox=tuple(s.outbox),
            )
            for rid, s in self.stored.items()
        }
        captured = None if self.captured is None else frozenset(self.captured)
        return Facts(
            tuple(self.published), runtimes, tuple(self.dead), frozenset(self.present), captured
        )

    def report(self) -> Report:
        return check(self.facts())


def dead_letter(
    runtime_id: str | None,
    message_id: str | None,
    error: str | None,
    death_reason: str | None = None,
) -> DeadLetter:
    return DeadLetter(
        message_id=message_id,
        message_type="meerkat.input.v1",
        runtime_id=runtime_id,
        routing_key=runtime_id or "",
        error=error,
        death_reason=death_reason,
        first_death_queue=None,
        death_count=0 if death_reason is None else 1,
    )


def healthy() -> History:
    history = History(captured=set())
    history.consumed_input(RT, images=2)
    history.consumed_input(RT, key="k-1")
    history.completed_command(RT)
    history.consumed_input(OTHER)
    history.hostile(OTHER)
    return history


def failing(report: Report) -> dict[str, int]:
    return {name: r.count for name, r in report.violations.items() if r.count}


def test_a_consistent_history_is_ok() -> None:
    report = healthy().report()
    assert failing(report) == {}
    assert report.ok
    assert dict(report.totals) == {
        "published": 5,
        "hostile": 1,
        "accepted": 4,
        "dead_lettered": 1,
        "runtimes": 2,
        "outbox_events": 7,
    }
    assert set(report.violations) == set(VIOLATIONS)
    assert set(report.warnings) == set(WARNINGS)


def test_a_message_neither_stored_nor_dead_lettered_is_lost() -> None:
    history = healthy()
    ghost = history.publish(RT, "input", message_id=str(uuid4()), input_id=uuid4())
    history.publish(OTHER, "command", message_id=str(uuid4()), command_id=uuid4())
    history.publish(OTHER, "hostile", message_id="never-seen", expect="dead_letter")
    report = history.report()
    assert failing(report) == {"lost": 3}
    assert report.violations["lost"].examples[0].subject == f"seq 5 {ghost.message_id}"


def test_a_valid_input_refused_with_a_typed_rejection_is_not_lost_but_refused() -> None:
    history = healthy()
    input_id = uuid4()
    history.publish(RT, "input", message_id=str(input_id), input_id=input_id)
    rejected = event(RT, EventCode.INPUT_REJECTED)
    history.emit(RT, replace_data(rejected, {"input_id": str(input_id)}))
    assert failing(history.report()) == {"refused": 1}


def test_a_deduplicated_redelivery_counts_as_the_one_acceptance() -> None:
    history = healthy()
    history.publish(RT, "input", message_id=str(uuid4()), input_id=uuid4(), idempotency_key="k-1")
    report = history.report()
    assert failing(report) == {}
    assert report.totals["accepted"] == 5


def test_a_message_stored_and_dead_lettered_is_duplicated() -> None:
    history = healthy()
    published, _ = history.consumed_input(RT)
    history.dead.append(dead_letter(RT, published.message_id, "timeout"))
    assert failing(history.report()) == {"duplicated": 1, "valid_dead_lettered": 1}


def test_one_idempotency_key_under_two_ids_is_duplicated() -> None:
    history = healthy()
    _, first = history.consumed_input(RT, key="k-twice")
    _, second = history.consumed_input(RT, key="k-other")
    history.stored[RT].inputs[-1] = replace(second, idempotency_key="k-twice")
    report = history.report()
    assert failing(report) == {"duplicated": 1}
    [finding] = report.violations["duplicated"].examples
    assert str(first.input_id) in finding.detail
    assert str(second.input_id) in finding.detail


def test_one_input_in_two_rows_is_duplicated() -> None:
    history = healthy()
    _, kept = history.consumed_input(RT)
    history.stored[RT].inputs.append(kept)
    assert failing(history.report()) == {"duplicated": 1}


def test_a_message_dead_lettered_twice_is_only_a_warning() -> None:
    history = healthy()
    history.hostile(RT, message_id="m-twice", times=2)
    report = history.report()
    assert report.ok
    assert report.warnings["dead_lettered_twice"].count == 1


def test_an_input_in_two_receipts_was_consumed_twice() -> None:
    history = healthy()
    history.consumed_input(RT, receipts=2)
    assert failing(history.report()) == {"consumed_twice": 1, "receipts_wrong": 1}


def test_a_consumed_prompt_without_a_receipt() -> None:
    history = healthy()
    history.consumed_input(OTHER, receipts=0)
    assert failing(history.report()) == {"receipts_wrong": 1}


def test_a_runtime_left_running_is_stuck() -> None:
    history = healthy()
    history.stored[OTHER].phase = RuntimePhase.RUNNING
    assert failing(history.report()) == {"stuck_running": 1}


def test_a_blob_of_a_stored_input_missing_from_the_blob_store() -> None:
    history = healthy()
    published, _ = history.consumed_input(RT, images=1)
    [lost_blob] = published.image_blob_ids
    history.present.discard(lost_blob)
    report = history.report()
    assert failing(report) == {"missing_blobs": 1}
    assert report.violations["missing_blobs"].examples[0].subject == lost_blob


def test_a_published_image_of_a_stored_input_missing_from_the_blob_store() -> None:
    history = healthy()
    published, _ = history.consumed_input(RT)
    history.published[published.seq] = published.model_copy(update={"image_blob_ids": (blob(),)})
    facts = history.facts()
    assert published.image_blob_ids == ()
    assert len(blob_ids_to_check(facts)) == 3
    assert failing(check(facts)) == {"missing_blobs": 1}


def test_inputs_admitted_in_another_order_than_published() -> None:
    history = healthy()
    admitted = [history.consumed_input(OTHER)[1] for _ in range(3)]
    # Published 1, 2, 3; admitted as 3, 1, 2: two pairs are inverted.
    for kept, seq in zip(admitted, (30, 10, 20), strict=True):
        history.stored[OTHER].inputs.remove(kept)
        history.stored[OTHER].inputs.append(replace(kept, admission_seq=seq))
    report = history.report()
    assert failing(report) == {"out_of_order": 2}
    assert len(report.violations["out_of_order"].examples) == 2


@given(st.lists(st.integers(min_value=0, max_value=20), max_size=30))
def test_inversions_are_counted_as_pairs(values: list[int]) -> None:
    brute = sum(
        1 for i, j in itertools.combinations(range(len(values)), 2) if values[i] > values[j]
    )
    assert _inversions(values) == brute


def test_a_dead_letter_without_a_reason() -> None:
    history = healthy()
    history.dead.append(dead_letter(RT, "m-broker", None, death_reason="delivery_limit"))
    # The dead queue is shared: letters of runtimes the log never published to are not ours.
    history.dead.append(dead_letter("rt:someone-else", "m-else", None))
    report = history.report()
    assert failing(report) == {"reasonless_dead_letters": 1}
    assert "delivery_limit" in report.violations["reasonless_dead_letters"].examples[0].detail


def test_a_valid_message_in_the_dead_queue() -> None:
    history = healthy()
    command_id = uuid4()
    history.publish(RT, "command", message_id=str(command_id), command_id=command_id)
    history.dead.append(dead_letter(RT, str(command_id), "store unavailable"))
    assert failing(history.report()) == {"valid_dead_lettered": 1}


def test_a_hostile_message_that_was_stored() -> None:
    history = healthy()
    _, kept = history.consumed_input(RT)
    history.publish(RT, "hostile", message_id=str(kept.input_id), expect="dead_letter")
    assert failing(history.report()) == {"hostile_accepted": 1}


def test_hostile_messages_without_an_id_are_matched_per_runtime() -> None:
    history = healthy()
    history.hostile(RT, message_id=None)
    history.hostile(RT, message_id=None)
    assert failing(history.report()) == {}
    history.dead.pop()
    assert failing(history.report()) == {"lost": 1}


def test_an_outbox_event_missing_from_the_capture() -> None:
    history = healthy()
    history.emit(RT, event(RT, EventCode.RUN_COMPLETED), sent=False)
    report = history.report()
    assert failing(report) == {"unpublished_events": 1}
    assert "run.completed missing from the events capture" in (
        report.violations["unpublished_events"].examples[0].detail
    )


def test_without_a_capture_unsent_outbox_events_are_counted() -> None:
    history = healthy()
    history.captured = None
    assert failing(history.report()) == {}
    history.emit(OTHER, event(OTHER, EventCode.RUN_COMPLETED), sent=False)
    assert failing(history.report()) == {"unpublished_events": 1}


def test_the_json_report_is_stable_and_the_text_names_examples() -> None:
    history = healthy()
    ghost = history.publish(RT, "input", message_id="ghost-id", input_id=uuid4())
    report = history.report()
    document = report_json(report)
    assert document["ok"] is False
    assert set(document) == {"ok", "counts", "violations", "warnings"}
    assert set(document["violations"]) == set(VIOLATIONS)
    assert document["counts"]["lost"] == 1
    assert document["counts"]["published"] == 6
    assert document["violations"]["lost"] == [
        {
            "runtime_id": RT,
            "subject": f"seq {ghost.seq} ghost-id",
            "detail": "input neither stored, refused nor dead-lettered",
        }
    ]
    text = render_text(report)
    assert "ghost-id" in text
    assert "history has problems: 1 check(s) failed" in text
    assert render_text(healthy().report()).endswith("history ok")


def replace_data(envelope: EventEnvelope, data: dict[str, Any]) -> EventEnvelope:
    return envelope.model_copy(update={"data": data, "at": NOW})


def test_an_input_expected_in_the_dead_queue_that_was_stored() -> None:
    history = healthy()
    published, _ = history.consumed_input(RT)
    history.published[published.seq] = published.model_copy(update={"expect": "dead_letter"})
    assert failing(history.report()) == {"hostile_accepted": 1}
