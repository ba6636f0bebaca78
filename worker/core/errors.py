"""Typed errors of the core. Each leaves the runtime it was given untouched."""

from __future__ import annotations

from uuid import UUID

from schemas import InputRejected, RejectReason
from worker.core.lifecycle import IllegalTransition


class CommandRefused(Exception):
    """A lifecycle command is illegal in the runtime's state; ``reason`` goes on the wire."""

    def __init__(self, reason: RejectReason) -> None:
        super().__init__(reason.model_dump_json())
        self.reason = reason


class RunNotCurrent(Exception):
    """A run result or failure names a run that is no longer the runtime's current run
    (it was cancelled, stopped or destroyed meanwhile); the result is discarded."""

    def __init__(self, runtime_id: str, run_id: UUID) -> None:
        super().__init__(f"run {run_id} is not the current run of {runtime_id!r}")
        self.runtime_id = runtime_id
        self.run_id = run_id


__all__ = ["CommandRefused", "IllegalTransition", "InputRejected", "RunNotCurrent"]
