"""The two state machines, as tables.

Like h11, the machines do no I/O and know nothing of stores or brokers. Each is a dict from
(state, trigger) to the next state; any pair not in the table is illegal and raises
:class:`IllegalTransition` without changing anything. Keeping the tables on one screen is the
point: the tests walk every (state, trigger) pair against them, and a reader can check them
against DOMAIN.md §4 and §5 at a glance.

Input machine. ``queued`` is the one initial state (an ``operation`` input is consumed on accept
by a second step, so its history still reads accepted → queued → consumed). Terminal phases have
no way out. The run-failure branch is two triggers (REQUEUE, EXHAUST) because the attempt cap is a
guard the caller evaluates: the table stays a plain function of (state, trigger).

Runtime machine. ``initializing`` is the initial state. ``running`` remembers the phase it left
(``pre_run_phase``); ending a run returns there, which the table writes as :data:`PRE_RUN`.
Retiring a running runtime keeps it running and rewrites the remembered phase to ``retired``, so
queued work drains and the runtime retires when the run ends.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from schemas import InputPhase, RuntimePhase


class IllegalTransition(Exception):
    """A (state, trigger) pair the table does not allow. Nothing was changed."""

    def __init__(self, machine: str, state: str, trigger: str) -> None:
        super().__init__(f"{machine}: {trigger} is illegal in state {state}")
        self.machine = machine
        self.state = state
        self.trigger = trigger


class InputTrigger(StrEnum):
    STAGE = "stage"
    COALESCE = "coalesce"
    SUPERSEDE = "supersede"
    CONSUME_ON_ACCEPT = "consume_on_accept"
    APPLY = "apply"
    AWAIT_CONSUMPTION = "await_consumption"
    CONSUME = "consume"
    REQUEUE = "requeue"
    EXHAUST = "exhaust"
    CANCEL = "cancel"
    ABANDON = "abandon"
    RECOVER_CONSUMED = "recover_consumed"
    RECOVER_REQUEUE = "recover_requeue"


_I = InputPhase
_IT = InputTrigger
_LIVE_INPUT = (_I.QUEUED, _I.STAGED, _I.APPLIED, _I.APPLIED_PENDING_CONSUMPTION)

INPUT_INITIAL: Final = _I.QUEUED
INPUT_TRANSITIONS: Final[dict[tuple[InputPhase, InputTrigger], InputPhase]] = {
    (_I.QUEUED, _IT.STAGE): _I.STAGED,
    (_I.QUEUED, _IT.COALESCE): _I.COALESCED,
    (_I.QUEUED, _IT.SUPERSEDE): _I.SUPERSEDED,
    (_I.QUEUED, _IT.CONSUME_ON_ACCEPT): _I.CONSUMED,
    (_I.STAGED, _IT.APPLY): _I.APPLIED,
    (_I.APPLIED, _IT.AWAIT_CONSUMPTION): _I.APPLIED_PENDING_CONSUMPTION,
    (_I.APPLIED_PENDING_CONSUMPTION, _IT.CONSUME): _I.CONSUMED,
    (_I.STAGED, _IT.REQUEUE): _I.QUEUED,
    (_I.STAGED, _IT.EXHAUST): _I.ABANDONED,
    (_I.STAGED, _IT.CANCEL): _I.ABANDONED,
    (_I.APPLIED, _IT.RECOVER_CONSUMED): _I.CONSUMED,
    (_I.APPLIED_PENDING_CONSUMPTION, _IT.RECOVER_CONSUMED): _I.CONSUMED,
    (_I.APPLIED, _IT.RECOVER_REQUEUE): _I.QUEUED,
    (_I.APPLIED_PENDING_CONSUMPTION, _IT.RECOVER_REQUEUE): _I.QUEUED,
    **{(phase, _IT.ABANDON): _I.ABANDONED for phase in _LIVE_INPUT},
}


def next_input_phase(phase: InputPhase, trigger: InputTrigger) -> InputPhase:
    try:
        return INPUT_TRANSITIONS[(phase, trigger)]
    except KeyError:
        raise IllegalTransition("input", phase.value, trigger.value) from None


class RuntimeTrigger(StrEnum):
    INITIALIZE = "initialize"
    ATTACH = "attach"
    DETACH = "detach"
    START_RUN = "start_run"
    END_RUN = "end_run"
    RETIRE = "retire"
    RESET = "reset"
    STOP = "stop"
    RESUME = "resume"
    DESTROY = "destroy"
    RECYCLE = "recycle"
    ABANDON = "abandon"
    CANCEL_RUN = "cancel_run"


class PreRun(StrEnum):
    """Table target meaning "the phase the runtime was in when the run started"."""

    PRE_RUN = "pre_run"


PRE_RUN: Final = PreRun.PRE_RUN
RuntimeTarget = RuntimePhase | PreRun

_R = RuntimePhase
_RT = RuntimeTrigger
_ALIVE = (_R.INITIALIZING, _R.IDLE, _R.ATTACHED, _R.RUNNING, _R.RETIRED, _R.STOPPED)

RUNTIME_INITIAL: Final = _R.INITIALIZING
RUNTIME_TERMINAL: Final = frozenset({_R.DESTROYED})
RUNTIME_TRANSITIONS: Final[dict[tuple[RuntimePhase, RuntimeTrigger], RuntimeTarget]] = {
    (_R.INITIALIZING, _RT.INITIALIZE): _R.IDLE,
    (_R.IDLE, _RT.ATTACH): _R.ATTACHED,
    (_R.ATTACHED, _RT.DETACH): _R.IDLE,
    (_R.IDLE, _RT.START_RUN): _R.RUNNING,
    (_R.ATTACHED, _RT.START_RUN): _R.RUNNING,
    (_R.RETIRED, _RT.START_RUN): _R.RUNNING,
    (_R.RUNNING, _RT.END_RUN): PRE_RUN,
    (_R.RUNNING, _RT.CANCEL_RUN): PRE_RUN,
    (_R.IDLE, _RT.RETIRE): _R.RETIRED,
    (_R.ATTACHED, _RT.RETIRE): _R.RETIRED,
    (_R.RUNNING, _RT.RETIRE): _R.RUNNING,
    (_R.STOPPED, _RT.RETIRE): _R.RETIRED,
    (_R.RETIRED, _RT.RETIRE): _R.RETIRED,
    (_R.INITIALIZING, _RT.RESET): _R.IDLE,
    (_R.IDLE, _RT.RESET): _R.IDLE,
    (_R.ATTACHED, _RT.RESET): _R.IDLE,
    (_R.RETIRED, _RT.RESET): _R.IDLE,
    (_R.STOPPED, _RT.RESUME): _R.IDLE,
    (_R.IDLE, _RT.RECYCLE): _R.IDLE,
    (_R.ATTACHED, _RT.RECYCLE): _R.ATTACHED,
    (_R.RETIRED, _RT.RECYCLE): _R.RETIRED,
    **{(phase, _RT.STOP): _R.STOPPED for phase in _ALIVE},
    **{(phase, _RT.DESTROY): _R.DESTROYED for phase in _ALIVE},
    **{(phase, _RT.ABANDON): phase for phase in _ALIVE},
}

ACCEPTS_INPUT: Final = frozenset({_R.IDLE, _R.ATTACHED, _R.RUNNING})
"""Phases whose gate lets new input in (DOMAIN.md §5)."""

PROCESSES_QUEUE: Final = frozenset({_R.IDLE, _R.ATTACHED, _R.RETIRED})
"""Phases from which a run may start (``retired`` drains what is queued)."""


def next_runtime_phase(
    phase: RuntimePhase, trigger: RuntimeTrigger, pre_run_phase: RuntimePhase | None = None
) -> RuntimePhase:
    try:
        target = RUNTIME_TRANSITIONS[(phase, trigger)]
    except KeyError:
        raise IllegalTransition("runtime", phase.value, trigger.value) from None
    if isinstance(target, PreRun):
        return pre_run_phase or _R.IDLE
    return target
