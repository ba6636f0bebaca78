"""The two state machines as tables (DOMAIN.md §4, §5): every (state, trigger) pair, and the
shape of the tables themselves."""

from __future__ import annotations

import copy
import itertools
from collections import deque
from collections.abc import Callable, Iterable

import pytest

from schemas import COMMAND_TYPES, Durability, InputKind, InputPhase, Lane, RuntimePhase
from schemas.states import TERMINAL_INPUT_PHASES
from tests.unit.core_factories import make_command, make_context, make_input
from worker.core import InputRecord
from worker.core.commands import TRIGGER_OF
from worker.core.lifecycle import (
    INPUT_INITIAL,
    INPUT_TRANSITIONS,
    PRE_RUN,
    RUNTIME_INITIAL,
    RUNTIME_TERMINAL,
    RUNTIME_TRANSITIONS,
    IllegalTransition,
    InputTrigger,
    PreRun,
    RuntimeTrigger,
    next_input_phase,
    next_runtime_phase,
)
from worker.core.records import move_input

pytestmark = pytest.mark.unit

_I = InputPhase
_R = RuntimePhase

# Phases a run may start from, i.e. what PRE_RUN can stand for.
PRE_RUN_PHASES = (_R.IDLE, _R.ATTACHED, _R.RETIRED)

INPUT_TERMINAL = {_I.CONSUMED, _I.COALESCED, _I.SUPERSEDED, _I.ABANDONED}


# --- input machine: every pair ---------------------------------------------------------------


@pytest.mark.parametrize(("phase", "trigger"), list(itertools.product(InputPhase, InputTrigger)))
def test_every_input_pair(phase: InputPhase, trigger: InputTrigger) -> None:
    expected = INPUT_TRANSITIONS.get((phase, trigger))
    if expected is None:
        with pytest.raises(IllegalTransition) as exc:
            next_input_phase(phase, trigger)
        assert (exc.value.machine, exc.value.state, exc.value.trigger) == (
            "input",
            phase.value,
            trigger.value,
        )
    else:
        assert next_input_phase(phase, trigger) is expected


@pytest.mark.parametrize(
    "phase", [p for p in InputPhase if (p, InputTrigger.STAGE) not in INPUT_TRANSITIONS]
)
def test_an_illegal_move_leaves_the_record_as_it_was(phase: InputPhase) -> None:
    ctx = make_context()
    item = make_input()
    before = InputRecord(
        input_id=item.header.id,
        kind=InputKind.PROMPT,
        phase=phase,
        lane=Lane.QUEUE,
        admission_seq=1,
        durability=Durability.DURABLE,
        payload=item,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    image = copy.deepcopy(before)
    with pytest.raises(IllegalTransition):
        move_input(before, InputTrigger.STAGE, ctx, "illegal")
    assert before == image
    assert before.history == ()


def test_input_table_matches_the_domain() -> None:
    """DOMAIN.md §4, written out; recovery's two triggers are §9."""
    live = (_I.QUEUED, _I.STAGED, _I.APPLIED, _I.APPLIED_PENDING_CONSUMPTION)
    it = InputTrigger
    expected = {
        (_I.QUEUED, it.STAGE): _I.STAGED,
        (_I.QUEUED, it.COALESCE): _I.COALESCED,
        (_I.QUEUED, it.SUPERSEDE): _I.SUPERSEDED,
        (_I.QUEUED, it.CONSUME_ON_ACCEPT): _I.CONSUMED,
        (_I.STAGED, it.APPLY): _I.APPLIED,
        (_I.APPLIED, it.AWAIT_CONSUMPTION): _I.APPLIED_PENDING_CONSUMPTION,
        (_I.APPLIED_PENDING_CONSUMPTION, it.CONSUME): _I.CONSUMED,
        (_I.STAGED, it.REQUEUE): _I.QUEUED,
        (_I.STAGED, it.EXHAUST): _I.ABANDONED,
        (_I.STAGED, it.CANCEL): _I.ABANDONED,
        (_I.APPLIED, it.RECOVER_CONSUMED): _I.CONSUMED,
        (_I.APPLIED_PENDING_CONSUMPTION, it.RECOVER_CONSUMED): _I.CONSUMED,
        (_I.APPLIED, it.RECOVER_REQUEUE): _I.QUEUED,
        (_I.APPLIED_PENDING_CONSUMPTION, it.RECOVER_REQUEUE): _I.QUEUED,
        **{(phase, it.ABANDON): _I.ABANDONED for phase in live},
    }
    assert expected == INPUT_TRANSITIONS


# --- runtime machine: every pair -------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "trigger"), list(itertools.product(RuntimePhase, RuntimeTrigger))
)
def test_every_runtime_pair(phase: RuntimePhase, trigger: RuntimeTrigger) -> None:
    target = RUNTIME_TRANSITIONS.get((phase, trigger))
    if target is None:
        for pre_run in (None, *PRE_RUN_PHASES):
            with pytest.raises(IllegalTransition) as exc:
                next_runtime_phase(phase, trigger, pre_run)
            assert (exc.value.machine, exc.value.state, exc.value.trigger) == (
                "runtime",
                phase.value,
                trigger.value,
            )
    elif target is PRE_RUN:
        for pre_run in PRE_RUN_PHASES:
            assert next_runtime_phase(phase, trigger, pre_run) is pre_run
    else:
        for pre_run in (None, *PRE_RUN_PHASES):
            assert next_runtime_phase(phase, trigger, pre_run) is target


def test_pre_run_without_a_remembered_phase_means_idle() -> None:
    assert next_runtime_phase(_R.RUNNING, RuntimeTrigger.END_RUN) is _R.IDLE


# --- the tables themselves -------------------------------------------------------------------


def _reachable(
    initial: str, edges: Iterable[tuple[str, str]], expand: Callable[[str], Iterable[str]]
) -> set[str]:
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).update(expand(target))
    seen = {initial}
    todo = deque([initial])
    while todo:
        for target in graph.get(todo.popleft(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _runtime_targets(target: str) -> Iterable[str]:
    return PRE_RUN_PHASES if target == PreRun.PRE_RUN else (target,)


def _sources_without_entry(edges: Iterable[tuple[str, str]], states: Iterable[str]) -> set[str]:
    entered = {target for source, target in edges if source != target}
    return set(states) - entered


def test_input_machine_shape() -> None:
    edges = [(source, target) for (source, _), target in INPUT_TRANSITIONS.items()]
    assert isinstance(INPUT_INITIAL, InputPhase)
    assert INPUT_INITIAL is _I.QUEUED
    # No phase but the initial one may lack a way in.
    assert _sources_without_entry(edges, InputPhase) <= {INPUT_INITIAL}
    assert INPUT_TERMINAL == TERMINAL_INPUT_PHASES
    assert {phase for phase in InputPhase if phase.is_terminal} == INPUT_TERMINAL
    for source, _ in INPUT_TRANSITIONS:
        assert source not in INPUT_TERMINAL, f"terminal {source} has a way out"
    assert _reachable(INPUT_INITIAL, edges, lambda t: (t,)) == set(InputPhase)


def test_runtime_machine_shape() -> None:
    edges = [(source, target) for (source, _), target in RUNTIME_TRANSITIONS.items()]
    assert RUNTIME_INITIAL is _R.INITIALIZING
    resolved = [(s, t) for s, raw in edges for t in _runtime_targets(raw)]
    assert _sources_without_entry(resolved, RuntimePhase) == {RUNTIME_INITIAL}
    assert {_R.DESTROYED} == RUNTIME_TERMINAL
    for source, _ in RUNTIME_TRANSITIONS:
        assert source not in RUNTIME_TERMINAL, f"terminal {source} has a way out"
    assert _reachable(RUNTIME_INITIAL, edges, _runtime_targets) == set(RuntimePhase)


def test_pre_run_is_only_reached_from_running() -> None:
    sources = {s for (s, _), t in RUNTIME_TRANSITIONS.items() if t is PRE_RUN}
    assert sources == {_R.RUNNING}
    starts = {s for (s, t) in RUNTIME_TRANSITIONS if t is RuntimeTrigger.START_RUN}
    assert starts == set(PRE_RUN_PHASES)


# --- legal commands per phase, as DOMAIN.md §5 writes them -----------------------------------

LIVE = "initializing idle attached running retired stopped"
# DOMAIN.md §5 "legal from", command by command ("any live state" = every state but destroyed).
DOMAIN_LEGAL_FROM: dict[str, str] = {
    "retire": "idle attached running stopped retired",
    "reset": "initializing idle attached retired",
    "stop": LIVE,
    "resume": "stopped",
    "destroy": LIVE,
    "recycle": "idle attached retired",
    "abandon_pending": LIVE,
    "abandon_input": LIVE,
    "cancel_run": "running",
}


def test_every_command_has_a_trigger() -> None:
    assert set(DOMAIN_LEGAL_FROM) == set(COMMAND_TYPES)
    assert {make_command(c).command_type for c in COMMAND_TYPES} == set(COMMAND_TYPES)
    assert {TRIGGER_OF[type(make_command(c))] for c in COMMAND_TYPES} <= set(RuntimeTrigger)


@pytest.mark.parametrize("phase", list(RuntimePhase))
def test_legal_commands_per_phase_match_the_domain(phase: RuntimePhase) -> None:
    expected = {c for c, legal in DOMAIN_LEGAL_FROM.items() if phase.value in legal.split()}
    legal = {
        c
        for c in COMMAND_TYPES
        if (phase, TRIGGER_OF[type(make_command(c))]) in RUNTIME_TRANSITIONS
    }
    assert legal == expected


def test_triggers_no_command_uses_are_run_loop_triggers() -> None:
    used = {TRIGGER_OF[type(make_command(c))] for c in COMMAND_TYPES}
    rt = RuntimeTrigger
    assert set(RuntimeTrigger) - used == {
        rt.INITIALIZE,
        rt.ATTACH,
        rt.DETACH,
        rt.START_RUN,
        rt.END_RUN,
    }
