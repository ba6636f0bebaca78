"""What a command may do to a runtime no message has created, under each policy of the core.

``REFUSE`` (what the worker runs with) refuses every command with ``runtime_unknown`` and writes
nothing; ``DESTROY_ONLY`` lets ``destroy`` tombstone the id and refuses the rest; ``CREATE`` is
the first command bringing the runtime into being. A runtime that is stored (version > 0) is
known whatever its phase, and a rejection of any kind never writes a runtime row.
"""

from __future__ import annotations

import pytest

from schemas import (
    COMMAND_TYPES,
    CommandCompleted,
    Malformed,
    RuntimeDestroyed,
    RuntimePhase,
    RuntimeUnknown,
)
from tests.unit.core_factories import (
    admit,
    assert_unchanged,
    make_command,
    make_context,
    make_input,
    new_runtime_id,
    put_runtime,
    runtime_image,
)
from worker.core import (
    CommandRefused,
    Context,
    Runtime,
    apply_command,
    reject_command,
    reject_input,
)
from worker.core.commands import UnknownRuntimes

pytestmark = pytest.mark.unit


@pytest.fixture
def ctx() -> Context:
    return make_context()


REFUSED = [(UnknownRuntimes.REFUSE, c) for c in COMMAND_TYPES] + [
    (UnknownRuntimes.DESTROY_ONLY, c) for c in COMMAND_TYPES if c != "destroy"
]


@pytest.mark.parametrize(("policy", "command_type"), REFUSED)
def test_a_command_for_an_unknown_runtime_is_refused_and_changes_nothing(
    policy: UnknownRuntimes, command_type: str, ctx: Context
) -> None:
    runtime = Runtime(new_runtime_id("unknown"))
    image = runtime_image(runtime)
    cmd = make_command(command_type)

    with pytest.raises(CommandRefused) as refused:
        apply_command(runtime, cmd, ctx, unknown_runtimes=policy)

    assert_unchanged(runtime, image)
    reason = refused.value.reason
    assert isinstance(reason, RuntimeUnknown)
    assert reason.command_type == command_type
    assert runtime.runtime_id in reason.detail


def test_the_refusal_leaves_only_an_event(ctx: Context) -> None:
    runtime = Runtime(new_runtime_id("unknown"))
    cmd = make_command("stop")
    with pytest.raises(CommandRefused) as refused:
        apply_command(runtime, cmd, ctx, unknown_runtimes=UnknownRuntimes.REFUSE)

    decision = reject_command(runtime, ctx, command_id=cmd.command_id, reason=refused.value.reason)

    assert decision.mutations == ()
    assert [e.code.value for e in decision.events] == ["command.rejected"]
    assert decision.runtime.version == 0


def test_destroy_may_tombstone_an_unknown_runtime_when_allowed(ctx: Context) -> None:
    runtime = Runtime(new_runtime_id("unknown"))
    decision = apply_command(
        runtime, make_command("destroy"), ctx, unknown_runtimes=UnknownRuntimes.DESTROY_ONLY
    )

    assert isinstance(decision.outcome, CommandCompleted)
    assert decision.runtime.phase is RuntimePhase.DESTROYED
    assert put_runtime(decision).expected_version == 0
    with pytest.raises(CommandRefused) as again:
        apply_command(decision.runtime, make_command("resume"), ctx,
                      unknown_runtimes=UnknownRuntimes.REFUSE)
    assert again.value.reason == RuntimeDestroyed()


def test_create_lets_the_first_command_bring_the_runtime_into_being(ctx: Context) -> None:
    decision = apply_command(Runtime(new_runtime_id("unknown")), make_command("stop"), ctx)
    assert decision.runtime.phase is RuntimePhase.STOPPED
    assert put_runtime(decision).expected_version == 0


@pytest.mark.parametrize("phase", [RuntimePhase.INITIALIZING, RuntimePhase.IDLE])
def test_a_stored_runtime_is_known_in_any_phase(phase: RuntimePhase, ctx: Context) -> None:
    runtime = Runtime(new_runtime_id("stored"), phase=phase, version=3)
    decision = apply_command(
        runtime, make_command("stop"), ctx, unknown_runtimes=UnknownRuntimes.REFUSE
    )
    assert decision.runtime.phase is RuntimePhase.STOPPED
    assert put_runtime(decision).expected_version == 3


def test_a_runtime_admitted_in_the_same_batch_is_known(ctx: Context) -> None:
    # An input accepted earlier in the batch has moved the working runtime to version 1.
    runtime = admit(Runtime(new_runtime_id("fresh")), make_input(), ctx)
    decision = apply_command(
        runtime, make_command("retire"), ctx, unknown_runtimes=UnknownRuntimes.REFUSE
    )
    assert decision.runtime.phase is RuntimePhase.RETIRED


def test_an_input_rejection_writes_no_row(ctx: Context) -> None:
    runtime = Runtime(new_runtime_id("unknown"))
    decision = reject_input(runtime, ctx, input_id=None, reason=Malformed(detail="bad"))
    assert (decision.mutations, decision.runtime) == ((), runtime)
