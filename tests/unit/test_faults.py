"""Fault plans: parsing, the three actions, count semantics and the cost of an empty plan."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
import timeit
from pathlib import Path

import pytest

from worker.faults import (
    FAULT_POINTS,
    NO_FAULTS,
    FaultAction,
    FaultInjected,
    FaultPlan,
    FaultSpecError,
)

pytestmark = pytest.mark.unit

SUPERVISED_LOOPS = (
    "committer_loop",
    "outbox_loop",
    "membership_tick",
    "run_turn",
    "consumer_delivery",
    "broker_session",
)


def test_every_named_point_is_known() -> None:
    crash_points = {
        "after_blob_put",
        "after_commit_before_ack",
        "mid_run",
        "after_boundary_commit",
        "during_outbox_publish",
        "during_handover",
    }
    startup_points = {"startup_end"}
    assert set(FAULT_POINTS) == crash_points | set(SUPERVISED_LOOPS) | startup_points
    assert all(description.strip() for description in FAULT_POINTS.values())


def test_every_point_the_code_reaches_is_known() -> None:
    """A misspelt point would only fail in a fault run; catch it in every run instead."""
    root = Path(__file__).resolve().parents[2]
    reached = re.compile(r"""\.reach(?:_sync)?\(\s*["']([^"']+)["']""")
    named = {
        (str(path.relative_to(root)), point)
        for package in ("worker", "persistence")
        for path in (root / package).rglob("*.py")
        for point in reached.findall(path.read_text(encoding="utf-8"))
    }
    assert named, "no fault point is reached anywhere"
    assert sorted(p for p in named if p[1] not in FAULT_POINTS) == []


@pytest.mark.parametrize("spec", [None, "", "  "])
def test_no_spec_is_the_empty_plan(spec: str | None) -> None:
    plan = FaultPlan.parse(spec)
    assert plan is NO_FAULTS
    assert not plan


def test_parse_reads_points_counts_and_actions() -> None:
    plan = FaultPlan.parse(" committer_loop:3:raise , outbox_loop:1:hang,after_blob_put:7")
    assert [(f.point, f.at, f.action) for f in plan.faults] == [
        ("committer_loop", 3, FaultAction.RAISE),
        ("outbox_loop", 1, FaultAction.HANG),
        ("after_blob_put", 7, FaultAction.KILL),
    ]
    assert FaultPlan.parse(plan.spec()).faults == plan.faults


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("after_comit_before_ack:3", "'after_comit_before_ack'"),
        ("mid_run:0", "'0'"),
        ("mid_run:-1", "'-1'"),
        ("mid_run:x", "'x'"),
        ("mid_run:2:explode", "'explode'"),
        ("mid_run", "'mid_run'"),
        ("mid_run:1:kill:extra", "'mid_run:1:kill:extra'"),
        ("mid_run:1,,run_turn:2", "''"),
        ("mid_run:1,mid_run:2", "given twice"),
    ],
)
def test_a_bad_spec_names_its_bad_part(spec: str, named: str) -> None:
    with pytest.raises(FaultSpecError) as caught:
        FaultPlan.parse(spec)
    assert named in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_an_unknown_point_error_lists_the_known_points() -> None:
    with pytest.raises(FaultSpecError, match="after_commit_before_ack, mid_run"):
        FaultPlan.parse("nowhere:1")


async def test_raise_fires_on_the_nth_reach_only_once() -> None:
    plan = FaultPlan.parse("run_turn:3:raise")
    await plan.reach("run_turn")
    await plan.reach("committer_loop")  # other points do not count towards run_turn
    await plan.reach("run_turn")
    with pytest.raises(FaultInjected) as caught:
        await plan.reach("run_turn")
    assert (caught.value.point, caught.value.count) == ("run_turn", 3)
    for _ in range(5):
        await plan.reach("run_turn")


async def test_points_count_independently() -> None:
    plan = FaultPlan.parse("run_turn:2:raise,outbox_loop:1:raise")
    await plan.reach("run_turn")
    with pytest.raises(FaultInjected, match="outbox_loop"):
        await plan.reach("outbox_loop")
    with pytest.raises(FaultInjected, match="run_turn"):
        await plan.reach("run_turn")


async def test_hang_wedges_the_reaching_task_until_cancelled() -> None:
    plan = FaultPlan.parse("outbox_loop:2:hang")
    turns = 0

    async def loop() -> None:
        nonlocal turns
        while True:
            await plan.reach("outbox_loop")
            turns += 1

    task = asyncio.create_task(loop())
    done, _ = await asyncio.wait({task}, timeout=0.2)
    assert not done, "the loop should be wedged at its second turn"
    assert turns == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_reach_sync_raises_and_refuses_hang() -> None:
    plan = FaultPlan.parse("during_handover:1:raise,membership_tick:1:hang")
    with pytest.raises(FaultInjected):
        plan.reach_sync("during_handover")
    with pytest.raises(RuntimeError, match="await reach"):
        plan.reach_sync("membership_tick")


async def test_an_armed_plan_refuses_an_unknown_point() -> None:
    plan = FaultPlan.parse("mid_run:5")
    with pytest.raises(ValueError, match="unknown fault point 'mid-run'"):
        await plan.reach("mid-run")


def _run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_kill_sigkills_the_process_on_the_nth_reach() -> None:
    child = _run_child(
        """
        import asyncio, sys
        from worker.faults import FaultPlan
        plan = FaultPlan.parse("after_commit_before_ack:2")
        async def main():
            await plan.reach("after_commit_before_ack")
            print("survived reach 1", flush=True)
            await plan.reach("after_commit_before_ack")
            print("survived reach 2", flush=True)
        asyncio.run(main())
        """
    )
    assert child.returncode == -9, child.stderr
    assert child.stdout == "survived reach 1\n"
    assert '"event": "fault_injected"' in child.stderr
    assert '"point": "after_commit_before_ack"' in child.stderr
    assert '"count": 2' in child.stderr


def test_kill_from_reach_sync() -> None:
    child = _run_child(
        """
        from worker.faults import FaultPlan
        FaultPlan.parse("during_handover:1:kill").reach_sync("during_handover")
        print("survived", flush=True)
        """
    )
    assert child.returncode == -9, child.stderr
    assert child.stdout == ""


def test_an_empty_plan_costs_next_to_nothing() -> None:
    """The hot path pays for one ``await`` of a coroutine that returns at once."""
    reach = NO_FAULTS.reach
    rounds = 20_000

    async def reached() -> None:
        for _ in range(rounds):
            await reach("consumer_delivery")

    async def bare() -> None:
        for _ in range(rounds):
            pass

    loop_cost = min(timeit.repeat(lambda: asyncio.run(bare()), number=1, repeat=3))
    reach_cost = min(timeit.repeat(lambda: asyncio.run(reached()), number=1, repeat=3))
    per_reach = (reach_cost - loop_cost) / rounds
    print(f"empty reach: {per_reach * 1e9:.0f} ns")
    assert per_reach < 2e-6, f"an empty reach costs {per_reach * 1e9:.0f} ns"
