"""The checks of ``meerkat-worker verify``: pure functions from gathered facts to a report.

The worker promises that a message is acked only after its commit, so across any crash every
published message ends exactly once: stored (an input row, a command outcome) or refused with a
typed rejection or dead-lettered with a reason, and never two of those. Each check below counts
one way that promise can break, with examples naming the ids involved, so that a failing fault
test says *what* went wrong, not just that something did.

How a published record is matched:

- stored: an input row under its id, or under its idempotency key (a deduplicated redelivery
  counts as the one acceptance it is); a command outcome under its id; for a hostile record,
  an input row or command outcome under its message id;
- refused: an ``input.rejected`` / ``command.rejected`` event naming its id;
- dead-lettered: dead letters with its message id. Hostile records without a message id are
  matched, per runtime, against dead letters without one, first come first served: give
  hostile messages an id where you can.

Dead letters are considered when their message id is in the log or their runtime is one the
log published to; the rest of the dead queue (other producers) is left alone.

``hostile_accepted`` counts every record expected in the dead queue (all hostile ones, and
inputs or commands a producer recorded with ``expect="dead_letter"``) that was stored.
``dead_lettered`` counts dead letters with a reason, a message dead-lettered twice twice.

``dead_lettered_twice`` is a warning, not a violation: the worker publishes the dead-letter
copy before it acks the original (so a crash never loses it), and a crash between the two
dead-letters the redelivery again. ``out_of_order`` counts inverted pairs: two accepted inputs
of one runtime whose admission order is the reverse of their publish order.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from uuid import UUID

from persistence.codec import blob_ids_of
from schemas import EventCode, InputKind, InputPhase, RuntimePhase
from worker.cli.dead_letters import DeadLetter
from worker.history.facts import CheckResult, Facts, Finding, Report, RuntimeFacts
from worker.history.published import PublishedRecord

MAX_ORDER_EXAMPLES = 20

VIOLATIONS = (
    "lost",
    "refused",
    "duplicated",
    "consumed_twice",
    "receipts_wrong",
    "stuck_running",
    "missing_blobs",
    "out_of_order",
    "reasonless_dead_letters",
    "valid_dead_lettered",
    "hostile_accepted",
    "unpublished_events",
)
WARNINGS = ("dead_lettered_twice",)
TOTALS = ("published", "hostile", "accepted", "dead_lettered", "runtimes", "outbox_events")

_REFUSALS = {EventCode.INPUT_REJECTED: "input_id", EventCode.COMMAND_REJECTED: "command_id"}


class _Index:
    """The facts rearranged for lookups by (runtime, id)."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.runtime_ids = {record.runtime_id for record in facts.published}
        message_ids = {r.message_id for r in facts.published if r.message_id is not None}
        self.dead = [
            d
            for d in facts.dead_letters
            if d.message_id in message_ids or d.runtime_id in self.runtime_ids
        ]
        self.input_rows: Counter[tuple[str, UUID]] = Counter()
        self.key_owners: dict[tuple[str, str], set[UUID]] = defaultdict(set)
        self.commands: set[tuple[str, UUID]] = set()
        self.refusals: dict[tuple[str, str], EventCode] = {}
        for runtime in facts.runtimes.values():
            self._add(runtime)
        self.dead_of = self._match_dead_letters()

    def _add(self, runtime: RuntimeFacts) -> None:
        rid = runtime.runtime_id
        for record in runtime.inputs:
            self.input_rows[rid, record.input_id] += 1
            if record.idempotency_key is not None:
                self.key_owners[rid, record.idempotency_key].add(record.input_id)
        self.commands.update((rid, outcome.command_id) for outcome in runtime.commands)
        for entry in runtime.outbox:
            field = _REFUSALS.get(entry.event.code)
            subject = entry.event.data.get(field) if field else None
            if isinstance(subject, str):
                self.refusals[rid, subject] = entry.event.code

    def _match_dead_letters(self) -> dict[int, list[DeadLetter]]:
        """Dead letters of each published record, keyed by ``seq``."""
        by_id: dict[str, list[DeadLetter]] = defaultdict(list)
        anonymous: dict[str | None, list[DeadLetter]] = defaultdict(list)
        for letter in self.dead:
            if letter.message_id is None:
                anonymous[letter.runtime_id].append(letter)
            else:
                by_id[letter.message_id].append(letter)
        matched: dict[int, list[DeadLetter]] = {}
        for record in self.facts.published:
            if record.message_id is not None:
                matched[record.seq] = by_id.get(record.message_id, [])
            else:
                pool = anonymous[record.runtime_id]
                matched[record.seq] = [pool.pop(0)] if pool else []
        return matched

    def stored_id(self, record: PublishedRecord) -> bool:
        """Stored under its own id (not merely deduplicated onto another)."""
        rid = record.runtime_id
        if record.kind == "input":
            return record.input_id is not None and (rid, record.input_id) in self.input_rows
        if record.kind == "command":
            return record.command_id is not None and (rid, record.command_id) in self.commands
        subject = _uuid(record.message_id)
        return subject is not None and (
            (rid, subject) in self.input_rows or (rid, subject) in self.commands
        )

    def accepted(self, record: PublishedRecord) -> bool:
        if self.stored_id(record):
            return True
        key = record.idempotency_key
        return (
            record.kind == "input"
            and key is not None
            and (record.runtime_id, key) in (self.key_owners)
        )

    def refusal(self, record: PublishedRecord) -> EventCode | None:
        subject = record.input_id or record.command_id or record.message_id
        return None if subject is None else self.refusals.get((record.runtime_id, str(subject)))


def check(facts: Facts) -> Report:
    """Every check over ``facts``."""
    index = _Index(facts)
    violations = {
        "lost": CheckResult.of(list(_lost(index))),
        "refused": CheckResult.of(list(_refused(index))),
        "duplicated": CheckResult.of(list(_duplicated(index))),
        "consumed_twice": CheckResult.of(list(_consumed_twice(facts))),
        "receipts_wrong": CheckResult.of(list(_receipts_wrong(facts))),
        "stuck_running": CheckResult.of(list(_stuck_running(facts))),
        "missing_blobs": CheckResult.of(list(_missing_blobs(index))),
        "out_of_order": _out_of_order(index),
        "reasonless_dead_letters": CheckResult.of(
            [_dead_finding(d, "no x-meerkat-error") for d in index.dead if d.error is None]
        ),
        "valid_dead_lettered": CheckResult.of(list(_valid_dead_lettered(index))),
        "hostile_accepted": CheckResult.of(
            [
                _finding(r, f"a {r.kind} expected in the dead queue was stored")
                for r in facts.published
                if r.expect == "dead_letter" and index.accepted(r)
            ]
        ),
        "unpublished_events": CheckResult.of(list(_unpublished_events(facts))),
    }
    warnings = {"dead_lettered_twice": CheckResult.of(list(_dead_lettered_twice(index)))}
    totals = {
        "published": len(facts.published),
        "hostile": len(_hostile(facts)),
        "accepted": sum(1 for r in facts.published if r.kind != "hostile" and index.accepted(r)),
        "dead_lettered": sum(1 for d in index.dead if d.error is not None),
        "runtimes": len(index.runtime_ids),
        "outbox_events": sum(len(rt.outbox) for rt in _published_runtimes(facts)),
    }
    return Report(totals=totals, violations=violations, warnings=warnings)


def blob_ids_to_check(facts: Facts) -> set[str]:
    """Every blob id the checker will look for: referenced by a stored input of a published
    runtime, or listed in the log for an input stored under its id. ``present_blobs`` of the
    facts need only answer for these."""
    return {blob_id for _, blob_id, _ in _referenced_blobs(_Index(facts))}


def _lost(index: _Index) -> Iterator[Finding]:
    for record in index.facts.published:
        if index.accepted(record) or index.refusal(record) or index.dead_of[record.seq]:
            continue
        yield _finding(record, f"{record.kind} neither stored, refused nor dead-lettered")


def _refused(index: _Index) -> Iterator[Finding]:
    for record in index.facts.published:
        refusal = index.refusal(record)
        if refusal is None or index.accepted(record):
            continue
        if record.expect == "accepted":
            yield _finding(record, f"expected to be accepted, refused with {refusal.value}")
        elif not index.dead_of[record.seq]:
            yield _finding(record, f"refused with {refusal.value} instead of dead-lettered")


def _duplicated(index: _Index) -> Iterator[Finding]:
    for (rid, input_id), rows in index.input_rows.items():
        if rows > 1:
            yield Finding(rid, str(input_id), f"input stored in {rows} rows")
    for (rid, key), owners in index.key_owners.items():
        if len(owners) > 1:
            ids = ", ".join(sorted(map(str, owners)))
            yield Finding(rid, key, f"idempotency key stored under {len(owners)} ids: {ids}")
    for record in index.facts.published:
        if index.dead_of[record.seq] and index.accepted(record):
            yield _finding(record, "both stored and dead-lettered")


def _consumed_twice(facts: Facts) -> Iterator[Finding]:
    for runtime in _published_runtimes(facts):
        for input_id, times in _receipt_counts(runtime).items():
            if times > 1:
                yield Finding(runtime.runtime_id, str(input_id), f"in {times} receipts")


def _receipts_wrong(facts: Facts) -> Iterator[Finding]:
    for runtime in _published_runtimes(facts):
        counts = _receipt_counts(runtime)
        for record in runtime.inputs:
            times = counts.get(record.input_id, 0)
            if (
                record.kind is InputKind.PROMPT
                and record.phase is InputPhase.CONSUMED
                and (times != 1)
            ):
                yield Finding(
                    runtime.runtime_id,
                    str(record.input_id),
                    f"consumed prompt in {times} receipts, not exactly one",
                )


def _receipt_counts(runtime: RuntimeFacts) -> Counter[UUID]:
    return Counter(i for receipt in runtime.receipts for i in receipt.contributing_input_ids)


def _stuck_running(facts: Facts) -> Iterator[Finding]:
    for runtime in _published_runtimes(facts):
        if runtime.row is not None and runtime.row.phase is RuntimePhase.RUNNING:
            run = runtime.row.current_run_id
            yield Finding(runtime.runtime_id, str(run or "-"), "runtime left running")


def _missing_blobs(index: _Index) -> Iterator[Finding]:
    for rid, blob_id, where in _referenced_blobs(index):
        if blob_id not in index.facts.present_blobs:
            yield Finding(rid, blob_id, f"blob of {where} is not in the blob store")


def _referenced_blobs(index: _Index) -> Iterator[tuple[str, str, str]]:
    seen: set[tuple[str, str]] = set()
    stored = (
        (runtime.runtime_id, blob_id, f"stored input {record.input_id}")
        for runtime in _published_runtimes(index.facts)
        for record in runtime.inputs
        for blob_id in blob_ids_of(record)
    )
    listed = (
        (record.runtime_id, blob_id, f"published input {record.input_id}")
        for record in index.facts.published
        if record.kind == "input" and index.stored_id(record)
        for blob_id in record.image_blob_ids
    )
    for rid, blob_id, where in (*stored, *listed):
        if (rid, blob_id) not in seen:
            seen.add((rid, blob_id))
            yield rid, blob_id, where


def _out_of_order(index: _Index) -> CheckResult:
    """Inverted pairs, per runtime, of accepted inputs: admission order against publish order."""
    admission = {
        (runtime.runtime_id, record.input_id): record.admission_seq
        for runtime in _published_runtimes(index.facts)
        for record in runtime.inputs
    }
    by_runtime: dict[str, list[tuple[int, UUID]]] = defaultdict(list)
    seen: set[UUID] = set()
    for record in sorted(index.facts.published, key=lambda r: r.seq):
        input_id = record.input_id
        if record.kind != "input" or input_id is None or input_id in seen:
            continue
        seq = admission.get((record.runtime_id, input_id))
        if seq is not None:
            seen.add(input_id)
            by_runtime[record.runtime_id].append((seq, input_id))
    count, examples = 0, list[Finding]()
    for rid, admitted in by_runtime.items():
        count += _inversions([seq for seq, _ in admitted])
        examples.extend(_inverted_pairs(rid, admitted, MAX_ORDER_EXAMPLES - len(examples)))
    return CheckResult(count, tuple(examples))


def _inversions(values: list[int]) -> int:
    """Pairs ``i < j`` with ``values[i] > values[j]``, by merge sort (O(n log n))."""
    if len(values) < 2:
        return 0
    middle = len(values) // 2
    left, right = sorted(values[:middle]), sorted(values[middle:])
    count = _inversions(values[:middle]) + _inversions(values[middle:])
    j = 0
    for value in left:
        # Right-half values smaller than ``value`` each form one inverted pair with it.
        while j < len(right) and right[j] < value:
            j += 1
        count += j
    return count


def _inverted_pairs(rid: str, admitted: list[tuple[int, UUID]], limit: int) -> Iterator[Finding]:
    found = 0
    for i, (first_seq, first) in enumerate(admitted):
        for later_seq, later in admitted[i + 1 :]:
            if found >= limit:
                return
            if later_seq < first_seq:
                found += 1
                yield Finding(
                    rid,
                    f"{first} > {later}",
                    f"published first, admitted at {first_seq} after {later_seq}",
                )


def _valid_dead_lettered(index: _Index) -> Iterator[Finding]:
    for record in index.facts.published:
        for letter in index.dead_of[record.seq] if record.expect == "accepted" else ():
            yield _finding(record, f"dead-lettered: {_why(letter)}")


def _dead_lettered_twice(index: _Index) -> Iterator[Finding]:
    times = Counter(d.message_id for d in index.dead if d.message_id is not None)
    for letter in index.dead:
        if letter.message_id is not None and times.pop(letter.message_id, 0) > 1:
            yield _dead_finding(letter, "in the dead queue more than once")


def _unpublished_events(facts: Facts) -> Iterator[Finding]:
    captured = facts.captured_event_ids
    for runtime in _published_runtimes(facts):
        for entry in runtime.outbox:
            event = entry.event
            if captured is None and not entry.sent:
                yield Finding(
                    runtime.runtime_id, str(event.event_id), f"{event.code.value} not marked sent"
                )
            elif captured is not None and event.event_id not in captured:
                yield Finding(
                    runtime.runtime_id,
                    str(event.event_id),
                    f"{event.code.value} missing from the events capture",
                )


def _published_runtimes(facts: Facts) -> Iterable[RuntimeFacts]:
    wanted = {record.runtime_id for record in facts.published}
    return [facts.runtimes[rid] for rid in sorted(wanted) if rid in facts.runtimes]


def _hostile(facts: Facts) -> list[PublishedRecord]:
    return [record for record in facts.published if record.kind == "hostile"]


def _finding(record: PublishedRecord, detail: str) -> Finding:
    subject = record.message_id or str(record.input_id or record.command_id or "-")
    return Finding(record.runtime_id, f"seq {record.seq} {subject}", detail)


def _dead_finding(letter: DeadLetter, detail: str) -> Finding:
    return Finding(letter.runtime_id, letter.message_id or "-", f"{detail} ({_why(letter)})")


def _why(letter: DeadLetter) -> str:
    if letter.error is not None:
        return f"error {letter.error!r}"
    return f"broker reason {letter.death_reason or 'unknown'}"


def _uuid(text: str | None) -> UUID | None:
    try:
        return None if text is None else UUID(text)
    except ValueError:
        return None
