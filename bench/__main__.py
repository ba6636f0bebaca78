"""``python -m bench``: run the scenarios, print a row for each and the table, write the JSON.

The method is described in the package docstring (``bench/__init__.py``). Exit code 0 when every
selected scenario passed its checks, 1 when one failed (its row shows the error instead of a
figure), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench.errors import BenchFailure
from bench.raw import run_raw
from bench.report import Row, table, write_json
from bench.scenarios import (
    Spec,
    accept_spec,
    e2e_spec,
    run_worker_scenario,
    slow_spec,
)
from bench.workerproc import THIS_CHECKOUT, WorkerBuild

SCENARIOS = ("raw", "accept", "e2e", "slow")
FULL = {"inputs": 20_000, "runtimes": 200, "slow_runs": 2_000}
QUICK = {"inputs": 300, "runtimes": 30, "slow_runs": 24}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Throughput of the worker, driven black box, against a raw consumer.",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"small sizes ({QUICK['inputs']} inputs over {QUICK['runtimes']} "
                             f"runtimes, {QUICK['slow_runs']} slow runs): about a minute")
    parser.add_argument("--inputs", type=int,
                        help=f"messages of raw, accept and e2e (default {FULL['inputs']})")
    parser.add_argument("--runtimes", type=int,
                        help=f"runtimes of accept and e2e (default {FULL['runtimes']})")
    parser.add_argument("--slow-runs", type=int,
                        help=f"prompts of slow, one runtime each (default {FULL['slow_runs']})")
    parser.add_argument("--max-concurrent-runs", type=int,
                        help="MEERKAT_MAX_CONCURRENT_RUNS for slow (default: the worker's own)")
    parser.add_argument("--only", action="append", metavar="NAMES",
                        help=f"comma-separated scenarios to run, of {', '.join(SCENARIOS)}")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server on which each scenario creates its own database")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/",
                        help="RabbitMQ broker (the consistent-hash exchange plugin enabled)")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"),
                        help="where to write the figures (default bench-results.json)")
    parser.add_argument("--logs", type=Path, default=Path("bench-logs"),
                        help="where each worker scenario's log is kept (default bench-logs/)")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also run each worker scenario with the worker of CHECKOUT (another "
                             "checkout of the project, with its own .venv), just before this "
                             "checkout's: before and after, side by side, in one run")
    parser.add_argument("--stall-timeout", type=float, default=60.0,
                        help="fail a wait whose count has not moved for this long (seconds)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    selected = [n.strip() for group in args.only or [",".join(SCENARIOS)]
                for n in group.split(",") if n.strip()]
    unknown = sorted(set(selected) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(SCENARIOS)}")
    args.selected = [n for n in SCENARIOS if n in selected]
    return args


def plan(args: argparse.Namespace) -> list[tuple[str, Callable[[], Awaitable[Row]]]]:
    def worker(spec: Spec, build: WorkerBuild = THIS_CHECKOUT) -> Callable[[], Awaitable[Row]]:
        return lambda: run_worker_scenario(
            spec, admin_url=args.database_url, amqp_url=args.amqp_url,
            stall_seconds=args.stall_timeout, logs=args.logs, build=build,
        )

    def raw() -> Awaitable[Row]:
        return run_raw(admin_url=args.database_url, amqp_url=args.amqp_url, inputs=args.inputs,
                       runtimes=args.runtimes, stall_seconds=args.stall_timeout)

    specs = {
        "accept": accept_spec(args.inputs, args.runtimes),
        "e2e": e2e_spec(args.inputs, args.runtimes),
        "slow": slow_spec(args.slow_runs, args.max_concurrent_runs),
    }
    steps: list[tuple[str, Callable[[], Awaitable[Row]]]] = []
    for name in args.selected:
        if name == "raw":
            steps.append((name, raw))
            continue
        if args.baseline is not None:
            before = WorkerBuild(args.baseline.resolve())
            steps.append((f"{name}@{before.label}", worker(specs[name], before)))
        steps.append((name, worker(specs[name])))
    return steps


def notes(row: Row) -> str:
    """The worker's log summary and outbox backlog, for a worker scenario's line."""
    log = row.details.get("worker_log")
    if log is None:
        return ""
    unsent = row.details.get("events_unsent_after_stop")
    return f"  [worker log: {log}; events unsent at stop: {unsent} of {row.details['events']}]"


async def run(args: argparse.Namespace) -> int:
    rows: list[Row] = []
    failures: dict[str, str] = {}
    begun = time.monotonic()
    print(f"inputs {args.inputs} over {args.runtimes} runtimes, slow runs {args.slow_runs}; "
          f"scenarios: {', '.join(args.selected)}", flush=True)
    for name, step in plan(args):
        started = time.monotonic()
        try:
            row = await step()
        except BenchFailure as exc:
            failures[name] = str(exc)
            print(f"{name:<7} error: {exc} ({time.monotonic() - started:.1f}s)",
                  file=sys.stderr, flush=True)
            continue
        row.details["wall_seconds"] = round(time.monotonic() - started, 1)
        rows.append(row)
        print(f"{row.line()}{notes(row)}  ({row.details['wall_seconds']}s)", flush=True)
    print()
    if rows:
        print(table(rows))
    for name, error in failures.items():
        print(f"{name}: FAILED: {error}")
    total = time.monotonic() - begun
    print(f"\n{len(rows)} passed, {len(failures)} failed, {total:.0f}s in all; "
          f"figures in {args.json}")
    write_json(args.json, rows, {
        "inputs": args.inputs, "runtimes": args.runtimes, "slow_runs": args.slow_runs,
        "max_concurrent_runs": args.max_concurrent_runs, "quick": args.quick,
        "failures": failures, "total_seconds": round(total, 1),
    })
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
