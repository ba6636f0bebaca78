"""Which events a deployment emits: ``MEERKAT_EVENTS``.

Every decision of the core carries the events that describe it, and by default all of them are
written to the outbox in the decision's transaction and published. A deployment whose consumers
read only some codes can name them: ``MEERKAT_EVENTS`` is a comma-separated list of event codes
or shell-style patterns (``run.*,input.consumed``); ``*`` (the default) is every code. Events
of the other codes are never written, so they cost neither outbox rows nor publishes.

The refusal events, ``input.rejected`` and ``command.rejected``, are always emitted: for a
refused message whose runtime id was readable they are the record of why it was refused, and the
crash-consistency checks (``meerkat-worker verify``) account for a refused message by them.

The selection is applied in one place, :meth:`EventSelection.kept`, on the decisions the driver
hands to the store; the core is unaware of it. Parsing is strict: an empty entry or a pattern
that matches no code is an error naming it, so a typo cannot silently switch events off.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from schemas import EventCode
from worker.core import Decision

ALWAYS_EMITTED = frozenset({EventCode.INPUT_REJECTED, EventCode.COMMAND_REJECTED})
"""Codes emitted whatever the selection says (see the module docstring)."""
EVERY_CODE = frozenset(EventCode)


class EventSelectionError(ValueError):
    """``MEERKAT_EVENTS`` names something that is not an event code."""


@dataclass(frozen=True)
class EventSelection:
    """The event codes written to the outbox."""

    codes: frozenset[EventCode] = EVERY_CODE

    @classmethod
    def parse(cls, text: str) -> EventSelection:
        """``text``: codes or patterns, comma-separated; raises :class:`EventSelectionError`."""
        codes: set[EventCode] = set(ALWAYS_EMITTED)
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                raise EventSelectionError(f"an empty entry in {text!r}")
            matched = {code for code in EventCode if fnmatch.fnmatchcase(code.value, entry)}
            if not matched:
                known = ", ".join(code.value for code in EventCode)
                raise EventSelectionError(f"{entry!r} matches no event code (codes: {known})")
            codes |= matched
        return cls(frozenset(codes))

    @property
    def everything(self) -> bool:
        return self.codes == EVERY_CODE

    def kept(self, decisions: Sequence[Decision]) -> Sequence[Decision]:
        """``decisions`` with only the selected events (the same objects when all are)."""
        if self.everything:
            return decisions
        codes = self.codes
        out = []
        for decision in decisions:
            events = tuple(e for e in decision.events if e.code in codes)
            if len(events) != len(decision.events):
                decision = dataclasses.replace(decision, events=events)
            out.append(decision)
        return out

    def describe(self) -> str:
        """The selection as it is logged: ``*`` or the sorted codes."""
        if self.everything:
            return "*"
        return ",".join(sorted(code.value for code in self.codes))


EVERYTHING = EventSelection()
