"""The pure runtime core: state machines, admission, commands, runs and recovery.

Imports only the standard library, :mod:`schemas` and ``immutables`` (the persistent map of a
runtime's inputs, :mod:`worker.core.inputs`: a pure data structure). Time and ids come in through
:class:`Context`. Every operation takes a :class:`Runtime` and returns a :class:`Decision` (the new
runtime, the row mutations to commit, the events) or raises a typed error; the runtime it was
given is never changed.
"""

from worker.core.admission import accept_input, admission_signal, externalize_images, lane_for
from worker.core.commands import UnknownRuntimes, apply_command
from worker.core.decide import decide_command, decide_input
from worker.core.errors import CommandRefused, IllegalTransition, InputRejected, RunNotCurrent
from worker.core.model import (
    MAX_STAGE_ATTEMPTS,
    BlobWrite,
    BoundaryReceipt,
    Context,
    Decision,
    DeleteInput,
    HistoryEntry,
    InputRecord,
    Mutation,
    PutInput,
    PutReceipt,
    PutRuntime,
    PutSnapshot,
    RecordCommand,
    RecoveryReport,
    RunState,
    Runtime,
    RuntimeRow,
    SessionSnapshot,
    Signal,
)
from worker.core.recovery import recover
from worker.core.rejections import reject_command, reject_input
from worker.core.runs import (
    archive_terminal,
    can_start_run,
    commit_boundary,
    conversation_digest,
    fail_run,
    next_batch,
    stage_batch,
    take_signal,
    then,
)

__all__ = [
    "MAX_STAGE_ATTEMPTS",
    "BlobWrite",
    "BoundaryReceipt",
    "CommandRefused",
    "Context",
    "Decision",
    "DeleteInput",
    "HistoryEntry",
    "IllegalTransition",
    "InputRecord",
    "InputRejected",
    "Mutation",
    "PutInput",
    "PutReceipt",
    "PutRuntime",
    "PutSnapshot",
    "RecordCommand",
    "RecoveryReport",
    "RunNotCurrent",
    "RunState",
    "Runtime",
    "RuntimeRow",
    "SessionSnapshot",
    "Signal",
    "UnknownRuntimes",
    "accept_input",
    "admission_signal",
    "apply_command",
    "archive_terminal",
    "can_start_run",
    "commit_boundary",
    "conversation_digest",
    "decide_command",
    "decide_input",
    "externalize_images",
    "fail_run",
    "lane_for",
    "next_batch",
    "recover",
    "reject_command",
    "reject_input",
    "stage_batch",
    "take_signal",
    "then",
]
