"""Random sequences of everything the core does, checked against its invariants after each step.

The machine keeps what a driver keeps: one in-memory runtime and a store (:class:`StoreModel`)
that only ever changes by committing a decision. "recover" throws the in-memory runtime away and
rebuilds it from the store, as a worker start or a shard takeover does; "recycle" does the same
after its commit.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from schemas import (
    COMMAND_TYPES,
    AnyCommand,
    AnyInput,
    CommandCompleted,
    Deduplicated,
    Durability,
    EventCategory,
    EventCode,
    HandlingMode,
    InputKind,
    InputPhase,
    InputRejected,
    Lane,
    RuntimePhase,
)
from tests.unit.core_factories import (
    FIXED_NOW,
    SequentialIds,
    StoreModel,
    assert_unchanged,
    make_command,
    make_input,
    new_input_id,
    new_run_id,
    new_runtime_id,
    put_inputs,
    runtime_image,
)
from worker.core import (
    CommandRefused,
    Context,
    Decision,
    DeleteInput,
    InputRecord,
    PutRuntime,
    RunNotCurrent,
    Runtime,
    accept_input,
    apply_command,
    archive_terminal,
    can_start_run,
    commit_boundary,
    fail_run,
    stage_batch,
    take_signal,
)

pytestmark = pytest.mark.unit

REFUSALS = (InputRejected, CommandRefused, RunNotCurrent)
SILENT_INPUT_CODES = {EventCode.INPUT_DEDUPLICATED, EventCode.INPUT_REJECTED}
# Commands that shut the runtime for input come up less often, destroy (for good) least, so that
# most sequences spend their steps accepting and running.
COMMAND_WEIGHTS = {"retire": 2, "stop": 2, "destroy": 1}
COMMAND_MIX = tuple(c for c in COMMAND_TYPES for _ in range(COMMAND_WEIGHTS.get(c, 4)))
STALE = st.sampled_from([False, False, False, True])
Operation = Callable[[Runtime, Context], Decision | None]


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ids = SequentialIds()
        self.ticks = 0
        self.runtime = Runtime(new_runtime_id("stateful"))
        self.store = StoreModel()
        self.terminal: dict[UUID, InputRecord] = {}
        self.sent: list[AnyInput] = []
        self.commands: list[AnyCommand] = []
        self.past_runs: list[UUID] = []
        self.highest_seq = 0

    # --- driving the core --------------------------------------------------------------------

    def context(self) -> Context:
        self.ticks += 1
        return Context(now=FIXED_NOW + timedelta(seconds=self.ticks), new_id=self.ids)

    def decide(self, operate: Operation) -> Decision | Exception | None:
        """Run one operation; commit and swap in what it decided, as the shell does."""
        before = self.runtime
        image = runtime_image(before)
        ctx = self.context()
        try:
            decision = operate(before, ctx)
        except REFUSALS as refusal:
            assert_unchanged(before, image)
            return refusal
        assert_unchanged(before, image)
        if decision is None:
            return None
        self.check_decision(before, decision, ctx)
        self.store.commit(decision)
        for record in put_inputs(decision):
            if record.is_terminal:
                self.terminal[record.input_id] = record
        self.runtime = decision.runtime
        return decision

    def check_decision(self, before: Runtime, decision: Decision, ctx: Context) -> None:
        if decision.mutations:
            head = decision.mutations[0]
            assert isinstance(head, PutRuntime)
            assert head.expected_version == before.version == self.store.version
            assert decision.runtime.version == before.version + 1 == head.row.version
        else:
            assert decision.runtime.version == before.version
        touched = {r.input_id for r in put_inputs(decision)}
        for mutation in decision.mutations:
            if isinstance(mutation, DeleteInput):
                touched.add(mutation.input_id)
        assert not touched & set(self.terminal), "a terminal input changed"
        for note in decision.events:
            assert (note.at, note.runtime_id) == (ctx.now, before.runtime_id)
            if note.code.category is EventCategory.INPUT and note.code not in SILENT_INPUT_CODES:
                assert UUID(note.data["input_id"]) in touched, note.code
        self.check_sequences(before, decision)

    def check_sequences(self, before: Runtime, decision: Decision) -> None:
        """A sequence handed out (admission or requeue) is above every earlier one."""
        for record in put_inputs(decision):
            old = before.inputs.get(record.input_id)
            if old is None or old.admission_seq != record.admission_seq:
                assert record.admission_seq > self.highest_seq
                self.highest_seq = record.admission_seq

    # --- rules -------------------------------------------------------------------------------

    @rule(
        kind=st.sampled_from(InputKind),
        mode=st.sampled_from([None, HandlingMode.QUEUE, HandlingMode.STEER]),
        idempotency_key=st.sampled_from([None, None, "idem-a", "idem-b"]),
        supersession_key=st.sampled_from([None, "sup-a", "sup-b"]),
        ephemeral=st.booleans(),
        count=st.integers(min_value=1, max_value=3),
    )
    def accept(
        self,
        kind: InputKind,
        mode: HandlingMode | None,
        idempotency_key: str | None,
        supersession_key: str | None,
        ephemeral: bool,
        count: int,
    ) -> None:
        for _ in range(count):
            item = make_input(
                kind,
                mode=mode,
                idempotency_key=idempotency_key,
                supersession_key=supersession_key,
                durability=Durability.EPHEMERAL if ephemeral else Durability.DURABLE,
            )
            self.sent.append(item)
            self.admit(item)

    @precondition(lambda self: bool(self.sent))
    @rule(pick=st.integers(min_value=0, max_value=40))
    def redeliver(self, pick: int) -> None:
        self.admit(self.sent[pick % len(self.sent)])

    def admit(self, item: AnyInput) -> None:
        match = self.store.stored_match(item)
        result = self.decide(lambda rt, ctx: accept_input(rt, item, ctx, stored_match=match))
        if match == item.header.id:
            assert isinstance(result, Decision)
            assert isinstance(result.outcome, Deduplicated)
        if isinstance(result, Decision) and isinstance(result.outcome, Deduplicated):
            assert result.mutations == ()

    @rule(
        command_type=st.sampled_from(COMMAND_MIX),
        abandon_pending=st.booleans(),
        pick=st.integers(min_value=-4, max_value=40),
    )
    def command(self, command_type: str, abandon_pending: bool, pick: int) -> None:
        cmd = self.new_command(command_type, abandon_pending, pick)
        self.commands.append(cmd)
        self.order(cmd)

    @precondition(lambda self: bool(self.commands))
    @rule(pick=st.integers(min_value=0, max_value=40))
    def redeliver_command(self, pick: int) -> None:
        self.order(self.commands[pick % len(self.commands)])

    def order(self, cmd: AnyCommand) -> None:
        stored = self.store.commands.get(cmd.command_id)
        before = self.runtime
        result = self.decide(lambda rt, ctx: apply_command(rt, cmd, ctx, stored_outcome=stored))
        if stored is not None:
            assert isinstance(result, Decision)
            assert (result.mutations, result.runtime) == ((), before)
            assert result.outcome == stored.model_copy(update={"deduplicated": True})
            return
        if isinstance(result, Decision):
            self.check_report(before, result)
            if result.reload_after_commit:
                self.recover()

    def new_command(self, command_type: str, abandon_pending: bool, pick: int) -> AnyCommand:
        fields: dict[str, Any] = {}
        if command_type == "retire":
            fields["abandon_pending"] = abandon_pending
        if command_type == "abandon_input":
            known = list(self.runtime.inputs)
            fields["input_id"] = known[pick % len(known)] if known and pick >= 0 else new_input_id()
        return make_command(command_type, **fields)

    def check_report(self, before: Runtime, decision: Decision) -> None:
        outcome = decision.outcome
        assert isinstance(outcome, CommandCompleted)
        assert outcome.state is decision.runtime.phase
        changed = [
            r
            for r in put_inputs(decision)
            if r.input_id not in before.inputs or before.inputs[r.input_id].phase is not r.phase
        ]
        assert len(changed) == (outcome.report.inputs_abandoned or 0)
        assert all(r.phase is InputPhase.ABANDONED for r in changed)

    @rule(max_batch=st.integers(min_value=1, max_value=4))
    def stage(self, max_batch: int) -> None:
        run_id = new_run_id()
        could = can_start_run(self.runtime)
        result = self.decide(
            lambda rt, ctx: stage_batch(rt, ctx, run_id=run_id, max_batch=max_batch)
        )
        assert (result is not None) is could
        if result is not None:
            assert isinstance(result, Decision)
            self.past_runs.append(run_id)

    @rule(stale=STALE, message_count=st.integers(min_value=0, max_value=5))
    def commit_boundary(self, stale: bool, message_count: int) -> None:
        run_id = self.pick_run(stale)
        session = {"messages": list(range(message_count)), "run": str(run_id)}
        self.expect_run_result(
            run_id,
            lambda rt, ctx: commit_boundary(
                rt, ctx, run_id=run_id, session=session, message_count=message_count
            ),
        )

    @rule(stale=STALE)
    def fail_run(self, stale: bool) -> None:
        run_id = self.pick_run(stale)
        self.expect_run_result(run_id, lambda rt, ctx: fail_run(rt, ctx, run_id=run_id, error="x"))

    def pick_run(self, stale: bool) -> UUID:
        current = self.runtime.current_run
        if current is not None and not stale:
            return current.run_id
        earlier = [r for r in self.past_runs if current is None or r != current.run_id]
        return earlier[-1] if earlier else new_run_id()

    def expect_run_result(self, run_id: UUID, operate: Operation) -> None:
        current = self.runtime.current_run
        is_current = current is not None and current.run_id == run_id
        result = self.decide(operate)
        if is_current:
            assert isinstance(result, Decision)
            assert result.runtime.current_run is None
        else:
            assert isinstance(result, RunNotCurrent)

    @rule()
    def take_signal(self) -> None:
        before = self.runtime
        image = runtime_image(before)
        self.runtime, signal = take_signal(before)
        assert_unchanged(before, image)
        assert signal is before.signal
        assert self.runtime.version == before.version

    @rule()
    def archive_terminal(self) -> None:
        before = self.runtime
        image = runtime_image(before)
        self.runtime = archive_terminal(before)
        assert_unchanged(before, image)
        assert all(not r.is_terminal for r in self.runtime.inputs.values())

    @rule()
    def recover(self) -> None:
        runtime_id = self.runtime.runtime_id
        result = self.decide(lambda rt, ctx: self.store.recover(runtime_id, ctx))
        assert isinstance(result, Decision)
        assert result.recovery is not None
        assert result.runtime.current_run is None

    @precondition(lambda self: self.runtime.phase is RuntimePhase.IDLE)
    @rule()
    def attach(self) -> None:
        """The run loop takes the runtime into memory (a process-local phase)."""
        self.runtime = dataclasses.replace(self.runtime, phase=RuntimePhase.ATTACHED)

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def an_input_waits_in_one_lane_only_while_queued(self) -> None:
        steer = self.runtime.lane(Lane.STEER)
        queue = self.runtime.lane(Lane.QUEUE)
        queued = [r for r in self.runtime.inputs.values() if r.phase is InputPhase.QUEUED]
        assert {r.input_id for r in steer}.isdisjoint(r.input_id for r in queue)
        assert len(steer) + len(queue) == len(queued)
        assert all(r.lane is Lane.STEER for r in steer)
        assert all(r.lane is Lane.QUEUE for r in queue)

    @invariant()
    def admission_sequences_increase(self) -> None:
        for lane in Lane:
            seqs = [r.admission_seq for r in self.runtime.lane(lane)]
            assert all(a < b for a, b in itertools.pairwise(seqs))
        every = [r.admission_seq for r in self.store.inputs.values()]
        assert all(seq < self.runtime.next_admission_seq for seq in every)

    @invariant()
    def one_run_at_a_time(self) -> None:
        runtime = self.runtime
        running = runtime.phase is RuntimePhase.RUNNING
        assert (runtime.current_run is not None) is running
        assert (runtime.pre_run_phase is not None) is running
        staged = {i for i, r in runtime.inputs.items() if r.phase is InputPhase.STAGED}
        assert staged == set(runtime.current_run.input_ids if runtime.current_run else ())

    @invariant()
    def terminal_inputs_never_change(self) -> None:
        for input_id, record in self.terminal.items():
            assert self.store.inputs[input_id] == record
            assert self.runtime.inputs.get(input_id, record) == record

    @invariant()
    def memory_matches_the_store(self) -> None:
        for input_id, record in self.runtime.inputs.items():
            assert self.store.inputs[input_id] == record
        live = {i for i, r in self.store.inputs.items() if not r.is_terminal}
        assert live == {r.input_id for r in self.runtime.live_inputs()}
        assert self.runtime.version == self.store.version
        if self.store.row is not None:
            row = self.runtime.row(self.store.row.updated_at)
            assert row == self.store.row


TestCoreMachine = CoreMachine.TestCase
TestCoreMachine.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
