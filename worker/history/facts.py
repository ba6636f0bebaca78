"""What the history checker knows: facts gathered from the store, the blob store, the dead queue
and the events capture, and the report it draws from them.

Plain frozen values and nothing else. :mod:`worker.history.gather` fills them by I/O,
:mod:`worker.history.checks` reads them without any; the split lets every check be tested with
hand-made facts (a store that really loses a message is hard to come by on purpose).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from uuid import UUID

from persistence.ports import OutboxEntry
from schemas import CommandCompleted
from worker.cli.dead_letters import DeadLetter
from worker.core.model import BoundaryReceipt, InputRecord, RuntimeRow
from worker.history.published import PublishedRecord


@dataclass(frozen=True)
class RuntimeFacts:
    """Everything stored for one runtime the producer published to."""

    runtime_id: str
    row: RuntimeRow | None = None
    inputs: tuple[InputRecord, ...] = ()
    receipts: tuple[BoundaryReceipt, ...] = ()
    commands: tuple[CommandCompleted, ...] = ()
    outbox: tuple[OutboxEntry, ...] = ()


@dataclass(frozen=True)
class Facts:
    """The whole history under check.

    ``present_blobs`` holds those of the checked blob ids (see
    :func:`worker.history.checks.blob_ids_to_check`) that the blob store has.
    ``captured_event_ids`` is None when no events capture was given.
    """

    published: tuple[PublishedRecord, ...]
    runtimes: Mapping[str, RuntimeFacts]
    dead_letters: tuple[DeadLetter, ...] = ()
    present_blobs: frozenset[str] = frozenset()
    captured_event_ids: frozenset[UUID] | None = None


@dataclass(frozen=True)
class Finding:
    """One example of a violation: where, which message or row, and what is wrong."""

    runtime_id: str | None
    subject: str
    detail: str


@dataclass(frozen=True)
class CheckResult:
    """A count and its examples (all of them, except for ``out_of_order``, which counts pairs
    and keeps only the first few)."""

    count: int = 0
    examples: tuple[Finding, ...] = ()

    @classmethod
    def of(cls, findings: list[Finding]) -> CheckResult:
        return cls(len(findings), tuple(findings))


@dataclass(frozen=True)
class Report:
    """Totals, violations (any non-zero one fails the check) and warnings (which do not)."""

    totals: Mapping[str, int]
    violations: Mapping[str, CheckResult]
    warnings: Mapping[str, CheckResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(result.count == 0 for result in self.violations.values())
