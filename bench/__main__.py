"""``python -m bench``: run the scenarios, print a line for each and the table, write the JSON.

The method is described in the package docstring (``bench/__init__.py``), the command line in
:mod:`bench.options`. The scenarios run in units: ``raw``, ``dramatiq``, then the worker's
sessions (``accept``/``e2e``/``latency`` share one, ``hot``/``cold`` another; ``slow``,
``memory`` and ``disk`` have one each), each with the ``--baseline`` build first when given. A
unit's rows count only once all of its checks have passed; when one fails, every scenario of the
unit is reported failed with the error. A scenario that cannot run here (``dramatiq`` without
the ``bench`` extra) is skipped, which is not a failure. Exit code 0 when every scenario that
ran passed, 1 when one failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bench.dramatiq_scenario import missing, run_dramatiq
from bench.errors import BenchFailure
from bench.footprint import run_disk, run_memory
from bench.hotcold import HotPlan, run_hot
from bench.options import parse_args
from bench.raw import run_raw
from bench.report import ORDER, Row, ordered, table, write_json
from bench.scenarios import EchoPlan, label, run_echo, run_slow
from bench.session import Context, Templates
from bench.workerproc import REPO_ROOT, THIS_CHECKOUT, WorkerBuild


@dataclass(frozen=True)
class Unit:
    names: tuple[str, ...]
    """The rows it reports."""
    run: Callable[[], Awaitable[list[Row]]]
    skip: str | None = None
    """Why it cannot run here, if it cannot."""


def plan(args: argparse.Namespace, context: Context) -> list[Unit]:
    selected = set(args.selected)
    this = dataclasses.replace(THIS_CHECKOUT, overrides=tuple(args.worker_setting))
    builds = [this]
    if args.baseline is not None:
        root = args.baseline.resolve()
        # This checkout as its own baseline: the same code without --worker-setting.
        builds.insert(0, WorkerBuild(root, name="baseline" if root == REPO_ROOT else ""))
    units: list[Unit] = []
    if "raw" in selected:
        units.append(Unit(("raw",), lambda: _one(run_raw(
            admin_url=args.database_url, amqp_url=args.amqp_url, inputs=args.inputs,
            runtimes=args.runtimes, stall_seconds=args.stall_timeout))))
    if "dramatiq" in selected:
        units.append(Unit(("dramatiq",), lambda: _one(run_dramatiq(
            context, inputs=args.inputs, runtimes=args.runtimes)), skip=missing()))
    for build in builds:
        units.extend(worker_units(args, context, build, selected))
    # Every build's session of one kind side by side: before, then after.
    return sorted(units, key=lambda unit: _rank(unit.names[0]))


def worker_units(args: argparse.Namespace, context: Context, build: WorkerBuild,
                 selected: set[str]) -> list[Unit]:
    units = []
    echo = [n for n in ("accept", "e2e", "latency") if n in selected]
    if echo:
        echo_plan = EchoPlan(
            inputs=args.inputs, runtimes=args.runtimes, accept="accept" in selected,
            e2e="e2e" in selected, latency_rate=args.latency_rate,
            latency_requests=args.latency_requests if "latency" in selected else None)
        units.append(Unit(_names(build, echo), lambda: run_echo(context, build, echo_plan)))
    if "slow" in selected:
        units.append(Unit(_names(build, ["slow"]), lambda: _one(run_slow(
            context, build, args.slow_runs, args.max_concurrent_runs or None))))
    hot = [n for n in ("hot", "cold") if n in selected]
    if hot:
        hot_plan = HotPlan(queued=args.hot_queued, inputs=args.hot_inputs, hot="hot" in hot,
                           cold="cold" in hot)
        units.append(Unit(_names(build, hot), lambda: run_hot(context, build, hot_plan)))
    if "memory" in selected:
        units.append(Unit(_names(build, ["memory"]), lambda: _one(run_memory(
            context, build, args.memory_runtimes))))
    if "disk" in selected:
        units.append(Unit(_names(build, ["disk"]), lambda: _one(run_disk(
            context, build, args.inputs, args.runtimes))))
    return units


def _names(build: WorkerBuild, names: Sequence[str]) -> tuple[str, ...]:
    return tuple(label(build, n) for n in names)


def _rank(name: str) -> int:
    return ORDER.index(name.partition("@")[0])


async def _one(row: Awaitable[Row]) -> list[Row]:
    return [await row]


async def run(args: argparse.Namespace) -> int:
    rows: list[Row] = []
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    begun = time.monotonic()
    load = os.getloadavg()
    print(f"inputs {args.inputs} over {args.runtimes} runtimes; scenarios: "
          f"{', '.join(args.selected)}"
          + (f" (also {'; '.join(args.implied)})" if args.implied else ""), flush=True)
    templates = Templates(args.database_url)
    context = Context(args.database_url, args.amqp_url, args.stall_timeout, args.logs,
                      templates)
    try:
        for unit in plan(args, context):
            names = ", ".join(unit.names)
            if unit.skip is not None:
                for name in unit.names:
                    skipped[name] = unit.skip
                print(f"{names:<9} skipped: {unit.skip}", flush=True)
                continue
            started = time.monotonic()
            try:
                found = await unit.run()
            except BenchFailure as exc:
                for name in unit.names:
                    failures[name] = str(exc)
                print(f"{names} error: {exc} ({time.monotonic() - started:.1f}s)",
                      file=sys.stderr, flush=True)
                continue
            wall = round(time.monotonic() - started, 1)
            for row in found:
                row.details["wall_seconds"] = wall
                rows.append(row)
                print(row.line(), flush=True)
            print(f"{'':<9} {names}: {wall}s in all", flush=True)
    finally:
        await templates.drop()
    print()
    if rows:
        print(table(ordered(rows)))
    for name, error in failures.items():
        print(f"{name}: FAILED: {error}")
    for name, reason in skipped.items():
        print(f"{name}: skipped: {reason}")
    total = time.monotonic() - begun
    print(f"\n{len(rows)} passed, {len(failures)} failed, {len(skipped)} skipped, "
          f"{total:.0f}s in all; figures in {args.json}")
    write_json(args.json, rows, {
        **{name: getattr(args, name) for name in (
            "inputs", "runtimes", "slow_runs", "latency_requests", "latency_rate",
            "hot_queued", "hot_inputs", "memory_runtimes", "max_concurrent_runs", "quick")},
        "selected": args.selected, "failures": failures, "skipped": skipped,
        "total_seconds": round(total, 1),
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load]},
    })
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
