"""The inputs a runtime holds: their records, and the table its decisions look them up in.

Theory of operation
-------------------
An :class:`InputRecord` is one row of the inputs table. A store that reads thousands of them
for a cold load may hand each over with its payload not yet decoded (:meth:`InputRecord.deferred`):
validating a payload costs as much as parsing a message, and only the inputs that are run or
written again need theirs.

A runtime is an immutable value (:mod:`worker.core.model`): every decision returns a new one and
the old one stays the rollback image until COMMIT has returned. With a plain dict that meant a
copy of every input per decision, so accepting into a runtime with 10,000 queued inputs cost
10,000 times what accepting into an empty one did. :class:`InputTable` is a persistent map
instead (a hash array mapped trie, ``immutables.Map``): a new version shares all but O(log n)
of its structure with the old one, and both stay valid.

Beside the inputs by id it keeps, updated with every change rather than recomputed:

- each lane's **queued** inputs by admission sequence (:class:`LaneOrder`), so that the run
  loop's next batch reads the head of a lane without scanning or sorting the runtime;
- the owner of each **idempotency key**, for key dedupe;
- the queued inputs by **(kind, supersession key)**, for coalescing and supersession;
- how many inputs are **live** (not terminal), for the cache's "at rest".

The table is a ``Mapping``: ``table[input_id]``, ``in``, ``len``, iteration, and equality with
any mapping of the same items (``table == {}`` for an empty one). Iteration order is not
admission order; :meth:`InputTable.in_admission_order` is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import immutables

from schemas import AbandonReason, AnyInput, Durability, InputKind, InputPhase, Lane


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: datetime
    from_phase: InputPhase | None
    to_phase: InputPhase
    reason: str


DEFERRED_FIELDS = frozenset({"payload"})
"""The fields a store may hand over undecoded (:meth:`InputRecord.deferred`). Only fields
without a default: the class attribute a default makes would answer before the decoder."""


@dataclass(frozen=True)
class InputRecord:
    """One input and its lifecycle: exactly one row of the inputs table.

    A record read from a store may carry its ``payload`` undecoded (see :meth:`deferred`): a
    cold load of a long queue then validates only the payloads of the inputs that are run or
    written again, not all of them. Reading it decodes it, once; to everything else the record
    is like any other.
    """

    input_id: UUID
    kind: InputKind
    phase: InputPhase
    lane: Lane
    admission_seq: int
    durability: Durability
    payload: AnyInput
    """The input as stored: images are blob references, never inline bytes."""
    created_at: datetime
    updated_at: datetime
    attempt_count: int = 0
    idempotency_key: str | None = None
    supersession_key: str | None = None
    correlation_id: str | None = None
    last_run_id: UUID | None = None
    boundary_sequence: int | None = None
    superseded_by: UUID | None = None
    aggregate_id: UUID | None = None
    abandon_reason: AbandonReason | None = None
    recovery_count: int = 0
    history: tuple[HistoryEntry, ...] = ()

    @property
    def is_terminal(self) -> bool:
        return self.phase.is_terminal

    @classmethod
    def deferred(cls, decode: Callable[[], dict[str, Any]], **fields: Any) -> InputRecord:
        """A record of ``fields`` (every field but :data:`DEFERRED_FIELDS`) whose deferred
        fields ``decode`` returns, by name, when one of them is first read. ``decode`` must be
        pure: copies of the record (``_evolved``) may each call it."""
        record = object.__new__(cls)
        record.__dict__.update(fields)
        record.__dict__["_deferred"] = decode
        return record

    if not TYPE_CHECKING:  # mypy keeps checking attribute names; only the deferred ones land

        def __getattr__(self, name: str) -> Any:
            # Reached only when ``name`` is not in the instance: a deferred field not yet read.
            state = self.__dict__
            decode = state.get("_deferred")
            if decode is None or name not in DEFERRED_FIELDS:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            for field_name, value in decode().items():
                state.setdefault(field_name, value)  # a copy may have set one since
            del state["_deferred"]
            return state[name]


_SeqMap = immutables.Map[int, tuple[UUID, ...]]
_KeyMap = immutables.Map[str, UUID]
_SupersessionKey = tuple[InputKind, str]
_SupersessionMap = immutables.Map[_SupersessionKey, tuple[UUID, ...]]


class LaneOrder:
    """One lane's queued inputs, FIFO by admission sequence: a persistent map sequence → ids
    (one id, unless stored data repeats a sequence), the lowest sequence present, a count.
    Changed only through a :class:`_LaneChange`.

    Sequences only grow as inputs are admitted or requeued, so the head moves forward: finding
    the next one after the head leaves skips each gap once (amortized O(1) a removal).
    """

    __slots__ = ("by_seq", "count", "head")

    def __init__(self, by_seq: _SeqMap | None = None, head: int = 0, count: int = 0) -> None:
        self.by_seq: _SeqMap = immutables.Map() if by_seq is None else by_seq
        self.head = head
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[UUID]:
        """The ids in admission order (ties, which admission never makes, by id)."""
        remaining, seq, by_seq = self.count, self.head, self.by_seq
        while remaining > 0:
            ids = by_seq.get(seq)
            if ids is not None:
                yield from ids
                remaining -= len(ids)
            seq += 1


class _LaneChange:
    """A :class:`LaneOrder` being changed (within one :meth:`InputTable._apply`)."""

    __slots__ = ("by_seq", "count", "head")

    def __init__(self, order: LaneOrder) -> None:
        self.by_seq = order.by_seq.mutate()
        self.head = order.head
        self.count = order.count

    def add(self, seq: int, input_id: UUID) -> None:
        ids = self.by_seq.get(seq, ())
        self.by_seq[seq] = tuple(sorted((*ids, input_id), key=str)) if ids else (input_id,)
        if self.count == 0 or seq < self.head:
            self.head = seq
        self.count += 1

    def remove(self, seq: int, input_id: UUID) -> None:
        ids = self.by_seq.get(seq, ())
        if input_id not in ids:
            return
        self.count -= 1
        rest = tuple(i for i in ids if i != input_id)
        if rest:
            self.by_seq[seq] = rest
            return
        del self.by_seq[seq]
        if not self.count:
            self.head = 0
        elif seq == self.head:
            head = seq + 1
            while head not in self.by_seq:
                head += 1
            self.head = head

    def finish(self) -> LaneOrder:
        return LaneOrder(self.by_seq.finish(), self.head, self.count)


_EMPTY_LANE = LaneOrder()


class InputTable(Mapping[UUID, InputRecord]):
    """A runtime's inputs by id (immutable, persistent), with its lane, key and supersession
    indexes. Change it with :meth:`updated` and :meth:`without`; both return a new table."""

    __slots__ = ("_keys", "_lanes", "_live", "_records", "_supersedable")

    def __init__(self, records: Iterable[InputRecord] = ()) -> None:
        self._records: immutables.Map[UUID, InputRecord] = immutables.Map()
        self._lanes: tuple[LaneOrder, LaneOrder] = (_EMPTY_LANE, _EMPTY_LANE)
        self._keys: _KeyMap = immutables.Map()
        self._supersedable: _SupersessionMap = immutables.Map()
        self._live = 0
        records = list(records)
        if records:
            self._apply(records, ())

    # -- Mapping -----------------------------------------------------------------------------

    def __getitem__(self, input_id: UUID) -> InputRecord:
        return self._records[input_id]

    def __contains__(self, input_id: object) -> bool:
        return input_id in self._records

    def __iter__(self) -> Iterator[UUID]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, input_id: UUID, default: Any = None) -> Any:
        return self._records.get(input_id, default)

    def __repr__(self) -> str:
        return f"InputTable({dict(self._records)!r})"

    # -- what the decisions look up ----------------------------------------------------------

    @property
    def live_count(self) -> int:
        """How many inputs are not terminal."""
        return self._live

    def queued(self, lane: Lane) -> Iterator[InputRecord]:
        """The queued inputs of ``lane``, in admission order, lazily."""
        records = self._records
        for input_id in self._lanes[lane is Lane.QUEUE]:
            yield records[input_id]

    def key_owner(self, idempotency_key: str) -> InputRecord | None:
        owner = self._keys.get(idempotency_key)
        return None if owner is None else self._records.get(owner)

    def queued_with_key(self, kind: InputKind, supersession_key: str) -> list[InputRecord]:
        """Queued inputs of ``kind`` with ``supersession_key``, in admission order."""
        ids = self._supersedable.get((kind, supersession_key), ())
        found = [self._records[i] for i in ids]
        return sorted(found, key=lambda r: (r.admission_seq, str(r.input_id)))

    def in_admission_order(self) -> list[InputRecord]:
        return sorted(self._records.values(), key=lambda r: (r.admission_seq, str(r.input_id)))

    # -- changes -----------------------------------------------------------------------------

    def updated(self, records: Iterable[InputRecord]) -> InputTable:
        """A new table with ``records`` replacing (or adding) inputs by id."""
        changed = list(records)
        if not changed:
            return self
        table = self._copy()
        table._apply(changed, ())
        return table

    def without(self, input_ids: Iterable[UUID]) -> InputTable:
        """A new table without ``input_ids`` (those it does not hold are ignored)."""
        gone = [i for i in input_ids if i in self._records]
        if not gone:
            return self
        if len(gone) == len(self._records):
            return EMPTY_INPUTS  # shared: an idle runtime's table costs nothing
        table = self._copy()
        table._apply((), gone)
        return table

    def _copy(self) -> InputTable:
        table = object.__new__(InputTable)
        table._records = self._records
        table._lanes = self._lanes
        table._keys = self._keys
        table._supersedable = self._supersedable
        table._live = self._live
        return table

    def _apply(self, puts: Iterable[InputRecord], deletes: Iterable[UUID]) -> None:
        """Change this (new, not yet shared) table in place: the one place indexes change."""
        change = _Change(self)
        records = self._records.mutate()
        for record in puts:
            old = records.get(record.input_id)
            if old is not None:
                change.unindex(old)
            records[record.input_id] = record
            change.index(record)
        for input_id in deletes:
            old = records.get(input_id)
            if old is not None:
                change.unindex(old)
                del records[input_id]
        self._records = records.finish()
        self._keys = change.keys.finish()
        self._supersedable = change.supersedable.finish()
        self._lanes = (change.lanes[0].finish(), change.lanes[1].finish())
        self._live = change.live


class _Change:
    """The indexes of an :class:`InputTable` being changed, as mutable builders."""

    __slots__ = ("keys", "lanes", "live", "supersedable")

    def __init__(self, table: InputTable) -> None:
        self.keys = table._keys.mutate()
        self.supersedable = table._supersedable.mutate()
        self.lanes = (_LaneChange(table._lanes[0]), _LaneChange(table._lanes[1]))
        self.live = table._live

    def index(self, record: InputRecord) -> None:
        if not record.phase.is_terminal:
            self.live += 1
        key = record.idempotency_key
        if key is not None and key not in self.keys:
            self.keys[key] = record.input_id
        if record.phase is not InputPhase.QUEUED:
            return
        self.lanes[record.lane is Lane.QUEUE].add(record.admission_seq, record.input_id)
        if record.supersession_key is not None:
            group = (record.kind, record.supersession_key)
            self.supersedable[group] = (*self.supersedable.get(group, ()), record.input_id)

    def unindex(self, record: InputRecord) -> None:
        if not record.phase.is_terminal:
            self.live -= 1
        key = record.idempotency_key
        if key is not None and self.keys.get(key) == record.input_id:
            del self.keys[key]
        if record.phase is not InputPhase.QUEUED:
            return
        self.lanes[record.lane is Lane.QUEUE].remove(record.admission_seq, record.input_id)
        if record.supersession_key is not None:
            group = (record.kind, record.supersession_key)
            rest = tuple(i for i in self.supersedable.get(group, ()) if i != record.input_id)
            if rest:
                self.supersedable[group] = rest
            else:
                del self.supersedable[group]


EMPTY_INPUTS = InputTable()
"""The table of a runtime without inputs (shared: tables are immutable)."""


def as_table(inputs: Mapping[UUID, InputRecord]) -> InputTable:
    """``inputs`` as a table (itself when it is one)."""
    if isinstance(inputs, InputTable):
        return inputs
    return InputTable(inputs.values()) if inputs else EMPTY_INPUTS
