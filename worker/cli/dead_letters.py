"""What one dead-lettered message is to an operator, and which ones a ``dlq`` command picks.

A :class:`DeadLetter` is read from a message of the dead queue by :func:`worker.cli.dlq.
dead_letter`; the history checker reads them too. A :class:`DeadLetterFilter` is the selection of
``dlq list``, ``dlq replay`` and ``dlq purge``: every criterion given must hold (they combine with
*and*); no criterion selects every message.

- ``reason``: the message's reason contains the text. The reason is ``x-meerkat-error`` (the typed
  rejection as JSON, e.g. ``{"reject_type":"image_invalid",...}``, or the failure), or, for a
  message the broker dead-lettered past its delivery limit, the broker's reason
  (``delivery_limit``). So ``image_invalid`` picks that rejection, ``delivery_limit`` the
  broker's dead letters, ``failed attempts`` the messages that kept failing.
- ``runtime``: the runtime id matches the pattern, exactly or with shell wildcards
  (``rt:tenant-*``; runtime ids never contain ``*``, ``?`` or ``[``).
- ``older_than`` / ``newer_than``: how long ago the message was dead-lettered, by the broker's
  ``x-death`` time or the worker's ``x-meerkat-dead-lettered-at`` header. A message whose
  dead-letter time is unknown matches no age criterion: an age filter never picks a message it
  cannot date.

Pure: no I/O, and the time is passed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any


@dataclass(frozen=True)
class DeadLetter:
    """What an operator needs to know about one dead-lettered message."""

    message_id: str | None
    message_type: str | None
    runtime_id: str | None
    routing_key: str
    error: str | None
    death_reason: str | None
    first_death_queue: str | None
    death_count: int
    dead_lettered_at: datetime | None = None
    """When it was dead-lettered (time zone aware), if the message says."""

    @property
    def reason(self) -> str | None:
        """Why it is in the dead queue: the worker's reason, else the broker's."""
        return self.error if self.error is not None else self.death_reason

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["dead_lettered_at"] = (
            None if self.dead_lettered_at is None else self.dead_lettered_at.isoformat()
        )
        return document

    def describe(self) -> str:
        death = self.death_reason or "-"
        if self.first_death_queue:
            death += f" in {self.first_death_queue}"
        return (
            f"{self.message_id or '-'}  {self.message_type or '-'}  "
            f"runtime={self.runtime_id or '-'}  death={death}  error={self.error or '-'}"
        )


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a command takes (see the module docstring)."""

    reason: str | None = None
    runtime: str | None = None
    older_than: timedelta | None = None
    newer_than: timedelta | None = None

    @property
    def selects_all(self) -> bool:
        return self == DeadLetterFilter()

    def matches(self, letter: DeadLetter, now: datetime) -> bool:
        if self.reason is not None and self.reason not in (letter.reason or ""):
            return False
        if self.runtime is not None and not (
            letter.runtime_id is not None and fnmatchcase(letter.runtime_id, self.runtime)
        ):
            return False
        if self.older_than is None and self.newer_than is None:
            return True
        if letter.dead_lettered_at is None:
            return False
        age = now - letter.dead_lettered_at
        if self.older_than is not None and not age > self.older_than:
            return False
        return self.newer_than is None or age < self.newer_than

    def describe(self) -> str:
        """The criteria as the options that give them, e.g. ``--reason x --older-than 2h``."""
        parts = []
        if self.reason is not None:
            parts.append(f"--reason {self.reason!r}")
        if self.runtime is not None:
            parts.append(f"--runtime {self.runtime}")
        if self.older_than is not None:
            parts.append(f"--older-than {_span(self.older_than)}")
        if self.newer_than is not None:
            parts.append(f"--newer-than {_span(self.newer_than)}")
        return " ".join(parts)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
