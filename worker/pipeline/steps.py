"""Run transitions as pipeline items: the run loop asks, the committer decides and commits.

A run's stage and its end (finished, failed) are state changes like any delivery, so they go
through the same windows and share their transactions (group commit). The run loop awaits the
step's ``done`` future: it resolves after the COMMIT with what was decided, or with the error
that made the committer give the step up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import Enum
from uuid import UUID

from schemas import AnyInput
from worker.runs.executors import RunResult
from worker.tracing import RunTrace


class StepKind(Enum):
    STAGE = "stage"
    FINISH = "finish"
    FAIL = "fail"


@dataclass(frozen=True)
class Staged:
    """A committed stage: the run and the payloads of its inputs, as stored."""

    run_id: UUID
    payloads: tuple[AnyInput, ...]
    trace: RunTrace | None = None
    """The run's spans, when tracing is on."""


StepResult = Staged | bool | None
"""STAGE: the staged run, or None when the runtime had nothing to run. FINISH and FAIL: whether
the run was still current (False: it was cancelled meanwhile, nothing was written); a FINISH
that asked for a next run (``next_run_id``) and got one answers that staged run instead."""


@dataclass(eq=False)
class RunStep:
    kind: StepKind
    runtime_id: str
    run_id: UUID
    result: RunResult | None = None
    error: str | None = None
    next_run_id: UUID | None = None
    """FINISH: stage the runtime's next batch on this run in the same decision, if it has one
    (a runtime with a backlog then costs one window per run, not two)."""
    done: asyncio.Future[StepResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    alone: bool = False
    conflicts: int = 0
    outages: int = 0
    """Outages this step waited out so far."""
    trace: RunTrace | None = None
    """The run's spans, when tracing is on: STAGE makes them when it is decided, FINISH and
    FAIL are given them."""
    requested_ns: int = field(default_factory=time.time_ns)
    """When the run loop asked for the step (the start of its span)."""
