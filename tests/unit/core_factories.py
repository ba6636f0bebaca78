"""Builders for tests of the pure core: inputs of every kind, commands, runtimes in a given
phase, and a deterministic :class:`Context` (a fixed clock and sequential ids).

Runtimes are brought into a phase through the core's own operations wherever the core has one,
so a test starts from a state the product can really reach. ``attached`` is the exception: it is
a process-local phase that the shell sets, so it is written in directly.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from schemas import (
    AbandonInput,
    AbandonPending,
    AnyCommand,
    AnyInput,
    CancelRun,
    CommandCompleted,
    ContinuationInput,
    Destroy,
    Durability,
    ExternalEventInput,
    FlowStepInput,
    HandlingMode,
    InputHeader,
    InputKind,
    InputPhase,
    OperationInput,
    OperatorSource,
    PeerInput,
    PeerMessage,
    PeerRequest,
    PeerResponseProgress,
    PeerResponseTerminal,
    PromptInput,
    Recycle,
    Reset,
    Resume,
    Retire,
    RuntimePhase,
    Stop,
    TurnMetadata,
)
from schemas.content import Content
from worker.core import (
    Context,
    Decision,
    DeleteInput,
    InputRecord,
    Mutation,
    PutInput,
    PutReceipt,
    PutRuntime,
    PutSnapshot,
    RecordCommand,
    Runtime,
    RuntimeRow,
    SessionSnapshot,
    accept_input,
    apply_command,
    commit_boundary,
    recover,
    stage_batch,
)
from worker.core.inputs import EMPTY_INPUTS

FIXED_NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)

_INPUT_NAMESPACE = 0x1
_COMMAND_NAMESPACE = 0x2
_RUN_NAMESPACE = 0x3
_CONTEXT_NAMESPACE = 0x4

_serial = itertools.count(1)


def _uuid(namespace: int, number: int) -> UUID:
    # Version-less UUIDs are fine for the core: it only compares them. The namespace in the
    # high bits keeps ids of different sorts apart, so a mix-up shows as a failed lookup.
    return UUID(int=(namespace << 96) | number)


def new_input_id() -> UUID:
    return _uuid(_INPUT_NAMESPACE, next(_serial))


def new_command_id() -> UUID:
    return _uuid(_COMMAND_NAMESPACE, next(_serial))


def new_run_id() -> UUID:
    return _uuid(_RUN_NAMESPACE, next(_serial))


def new_runtime_id(label: str = "core") -> str:
    """A runtime id no other test uses."""
    return f"rt:test:{label}:{next(_serial)}"


class SequentialIds:
    """The ``new_id`` of a :class:`Context`: 1, 2, 3, ... within one namespace."""

    def __init__(self, namespace: int = _CONTEXT_NAMESPACE) -> None:
        self._namespace = namespace
        self._next = itertools.count(1)
        self.issued: list[UUID] = []

    def __call__(self) -> UUID:
        value = _uuid(self._namespace, next(self._next))
        self.issued.append(value)
        return value


def make_context(now: datetime = FIXED_NOW, ids: SequentialIds | None = None) -> Context:
    return Context(now=now, new_id=ids or SequentialIds())


def later(ctx: Context, seconds: float = 1.0) -> Context:
    """The same id source, the clock moved on."""
    return Context(now=ctx.now + timedelta(seconds=seconds), new_id=ctx.new_id)


# Inputs


def header(
    *,
    input_id: UUID | None = None,
    durability: Durability = Durability.DURABLE,
    idempotency_key: str | None = None,
    supersession_key: str | None = None,
    correlation_id: str | None = None,
) -> InputHeader:
    return InputHeader(
        id=input_id or new_input_id(),
        timestamp=FIXED_NOW,
        source=OperatorSource(),
        durability=durability,
        idempotency_key=idempotency_key,
        supersession_key=supersession_key,
        correlation_id=correlation_id,
    )


def _peer(head: InputHeader, convention: Any, mode: HandlingMode | None, content: Content) -> Any:
    return PeerInput(header=head, convention=convention, content=content, handling_mode=mode)


_BUILDERS: dict[InputKind, Callable[[InputHeader, HandlingMode | None, Content], AnyInput]] = {
    InputKind.PROMPT: lambda h, m, c: PromptInput(
        header=h, content=c, turn_metadata=TurnMetadata(handling_mode=m) if m else None
    ),
    InputKind.PEER_MESSAGE: lambda h, m, c: _peer(h, PeerMessage(), m, c),
    InputKind.PEER_REQUEST: lambda h, m, c: _peer(
        h, PeerRequest(request_id="req-1", intent="review"), m, c
    ),
    InputKind.PEER_RESPONSE_PROGRESS: lambda h, m, c: _peer(
        h, PeerResponseProgress(request_id="req-1", phase="halfway"), m, c
    ),
    InputKind.PEER_RESPONSE_TERMINAL: lambda h, m, c: _peer(
        h, PeerResponseTerminal(request_id="req-1", status="completed"), m, c
    ),
    InputKind.FLOW_STEP: lambda h, m, c: FlowStepInput(header=h, step_id="step-1", content=c),
    InputKind.EXTERNAL_EVENT: lambda h, m, c: ExternalEventInput(
        header=h,
        event_type="push",
        payload={"ref": "main"},
        handling_mode=m or HandlingMode.QUEUE,
    ),
    InputKind.CONTINUATION: lambda h, m, c: ContinuationInput(
        header=h, reason="tool result", handling_mode=m or HandlingMode.QUEUE
    ),
    InputKind.OPERATION: lambda h, m, c: OperationInput(
        header=h, operation_id="op-1", event={"op": "noop"}
    ),
}


def make_input(
    kind: InputKind = InputKind.PROMPT,
    *,
    mode: HandlingMode | None = None,
    content: Content = "hello",
    **header_fields: Any,
) -> AnyInput:
    """An input of ``kind``; ``mode`` is its handling mode where the kind has one."""
    return _BUILDERS[kind](header(**header_fields), mode, content)


# Commands


_COMMANDS: dict[str, Callable[..., AnyCommand]] = {
    "retire": Retire,
    "reset": Reset,
    "stop": Stop,
    "resume": Resume,
    "destroy": Destroy,
    "recycle": Recycle,
    "abandon_pending": AbandonPending,
    "abandon_input": AbandonInput,
    "cancel_run": CancelRun,
}


def make_command(command_type: str, **fields: Any) -> AnyCommand:
    """A command of ``command_type`` with a fresh id (``abandon_input`` needs ``input_id``)."""
    fields.setdefault("command_id", new_command_id())
    if command_type == "abandon_input":
        fields.setdefault("input_id", new_input_id())
    return _COMMANDS[command_type](**fields)


# Runtimes


def admit(runtime: Runtime, item: AnyInput, ctx: Context) -> Runtime:
    decision = accept_input(runtime, item, ctx)
    assert decision.mutations, f"{item.header.id} was not admitted"
    return decision.runtime


def admit_all(runtime: Runtime, items: Iterable[AnyInput], ctx: Context) -> Runtime:
    for item in items:
        runtime = admit(runtime, item, ctx)
    return runtime


def command(runtime: Runtime, command_type: str, ctx: Context, **fields: Any) -> Runtime:
    return apply_command(runtime, make_command(command_type, **fields), ctx).runtime


def stage(runtime: Runtime, ctx: Context, *, max_batch: int = 64) -> tuple[Runtime, UUID]:
    run_id = new_run_id()
    decision = stage_batch(runtime, ctx, run_id=run_id, max_batch=max_batch)
    assert decision is not None, "nothing to stage"
    return decision.runtime, run_id


def finish(runtime: Runtime, run_id: UUID, ctx: Context) -> Runtime:
    session = {"messages": ["done"]}
    return commit_boundary(runtime, ctx, run_id=run_id, session=session, message_count=1).runtime


def idle_runtime(ctx: Context, *items: AnyInput) -> Runtime:
    """A stored, idle runtime holding ``items`` as queued inputs."""
    runtime = command(Runtime(new_runtime_id("idle")), "reset", ctx)
    return admit_all(runtime, items, ctx)


PHASE_LABELS = (
    "fresh",
    "initializing",
    "idle",
    "attached",
    "running",
    "running_retiring",
    "retired",
    "stopped",
    "destroyed",
)
"""Starting points of the command tests: ``fresh`` is a runtime no message has named yet
(version 0); ``initializing`` a stored one still in that phase; ``running_retiring`` a running
runtime that was told to retire."""


_ENDING_COMMAND = {"retired": "retire", "stopped": "stop", "destroyed": "destroy"}


def populated_runtime(label: str, ctx: Context) -> Runtime:
    """A runtime in the phase named by ``label`` holding, where the phase allows it, a consumed
    operation, two queued prompts and one queued steer continuation (staged when running)."""
    if label == "fresh":
        return Runtime(new_runtime_id(label))
    if label == "initializing":
        return Runtime(new_runtime_id(label), version=4)
    work = (
        make_input(InputKind.OPERATION),
        make_input(InputKind.CONTINUATION, mode=HandlingMode.STEER),
        make_input(InputKind.PROMPT),
        make_input(InputKind.PROMPT),
    )
    runtime = idle_runtime(ctx, *work)
    if label == "idle":
        return runtime
    if label == "attached":
        return dataclasses.replace(runtime, phase=RuntimePhase.ATTACHED)
    if label in ("running", "running_retiring"):
        runtime, _ = stage(runtime, ctx)
        return command(runtime, "retire", ctx) if label == "running_retiring" else runtime
    return command(runtime, _ENDING_COMMAND[label], ctx)


# Comparing runtimes


def runtime_image(runtime: Runtime) -> tuple[Runtime, dict[UUID, InputRecord]]:
    """A deep copy of ``runtime`` (its read-only inputs mapping copied as a plain dict) to
    compare the original with after an operation."""
    inputs = copy.deepcopy(dict(runtime.inputs))
    return copy.deepcopy(dataclasses.replace(runtime, inputs=EMPTY_INPUTS)), inputs


def assert_unchanged(runtime: Runtime, image: tuple[Runtime, dict[UUID, InputRecord]]) -> None:
    shell, inputs = image
    assert dataclasses.replace(runtime, inputs=EMPTY_INPUTS) == shell
    assert dict(runtime.inputs) == inputs


def phases(runtime: Runtime) -> dict[UUID, InputPhase]:
    return {input_id: record.phase for input_id, record in runtime.inputs.items()}


def put_inputs(decision: Decision) -> list[InputRecord]:
    return [m.record for m in decision.mutations if isinstance(m, PutInput)]


def put_runtime(decision: Decision) -> PutRuntime:
    first = decision.mutations[0]
    assert isinstance(first, PutRuntime), "a decision's first mutation is the runtime row"
    return first


def event_codes(decision: Decision) -> list[str]:
    return [e.code.value for e in decision.events]


# A store, as small as it can be


@dataclasses.dataclass
class StoreModel:
    """The rows a store would hold for one runtime, changed only by committing decisions.

    It checks what a real store's transaction checks: the runtime row's version, that an
    inserted input is new, that a receipt is unique, so a decision a store would refuse fails
    here too.
    """

    row: RuntimeRow | None = None
    inputs: dict[UUID, InputRecord] = dataclasses.field(default_factory=dict)
    receipts: set[tuple[UUID, int]] = dataclasses.field(default_factory=set)
    snapshots: list[SessionSnapshot] = dataclasses.field(default_factory=list)
    commands: dict[UUID, CommandCompleted] = dataclasses.field(default_factory=dict)

    @property
    def version(self) -> int:
        return self.row.version if self.row else 0

    def commit(self, decision: Decision) -> None:
        for mutation in decision.mutations:
            self._apply(mutation)

    def _apply(self, mutation: Mutation) -> None:
        match mutation:
            case PutRuntime(row=row, expected_version=expected):
                assert expected == self.version, f"version conflict: {expected} != {self.version}"
                assert row.version == expected + 1
                self.row = row
            case PutInput(record=record, insert=insert):
                assert insert is (record.input_id not in self.inputs)
                self.inputs[record.input_id] = record
            case DeleteInput(input_id=input_id):
                del self.inputs[input_id]
            case PutReceipt(receipt=receipt):
                key = (receipt.run_id, receipt.sequence)
                assert key not in self.receipts, "receipt conflict"
                self.receipts.add(key)
            case PutSnapshot(snapshot=snapshot):
                self.snapshots.append(snapshot)
            case RecordCommand(command_id=command_id, outcome=outcome):
                self.commands[command_id] = outcome

    def stored_match(self, item: AnyInput) -> UUID | None:
        """What the shell looks up before admission: a row with this id, else this key."""
        header = item.header
        if header.id in self.inputs:
            return header.id
        for record in self.inputs.values():
            if header.idempotency_key and record.idempotency_key == header.idempotency_key:
                return record.input_id
        return None

    def recover(self, runtime_id: str, ctx: Context) -> Decision:
        return recover(
            runtime_id, self.row, list(self.inputs.values()), frozenset(self.receipts), ctx
        )
