"""How a command ends on a failure :mod:`worker.refusals` knows: its exit code and one line.

``main`` hands every exception a command raises to :func:`exit_for`; a known one becomes the
line ``meerkat-worker COMMAND: ...`` on stderr (secrets masked) and the exit code of its kind,
any other goes on (a traceback: a bug to report). The refusals are imported only then, so that
a command that succeeds never loads the broker and HTTP libraries for it.
"""

from __future__ import annotations

from worker.cli.common import (
    EXIT_FAILED,
    EXIT_FATAL,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    fail,
    scrub,
)
from worker.config import Settings

EXIT_CODES = {
    "configuration": EXIT_USAGE,
    "problem": EXIT_FAILED,
    "unreachable": EXIT_UNAVAILABLE,
    "failed": EXIT_FATAL,
}
"""Each kind of refusal (:class:`worker.refusals.Kind`) → the exit code."""


def exit_for(exc: BaseException, settings: Settings, command: str) -> int | None:
    """Print the line of a known failure and return its exit code; ``None`` for any other."""
    from worker.refusals import refusal_of

    refusal = refusal_of(exc)
    if refusal is None:
        return None
    return fail(scrub(refusal.line, settings), EXIT_CODES[refusal.kind.value], command)
