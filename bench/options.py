"""The command line of ``python -m bench``: the scenarios to run and their sizes.

Sizes default to :data:`FULL`, or :data:`QUICK` with ``--quick``; any size given on the command
line wins. ``latency`` publishes at half the lower of the rates ``accept`` and ``e2e`` measured
in the same run, so selecting it selects ``accept`` too, unless ``--latency-rate`` sets the rate.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bench.report import ORDER
from worker.config import Settings

SCENARIOS = ORDER
FULL = {"inputs": 20_000, "runtimes": 200, "slow_runs": 2_000, "latency_requests": 5_000,
        "hot_queued": 10_000, "hot_inputs": 2_000, "memory_runtimes": 2_000}
QUICK = {"inputs": 300, "runtimes": 30, "slow_runs": 24, "latency_requests": 200,
         "hot_queued": 500, "hot_inputs": 100, "memory_runtimes": 100}
SLOW_CONCURRENCY = 1_000
"""The concurrency ``slow`` measures at: the speed target names 1,000 concurrent runs."""
MAX_CACHED_RUNTIMES: int = Settings.model_fields["max_cached_runtimes"].default
HELP = {
    "inputs": "messages of raw, dramatiq, accept, e2e and disk",
    "runtimes": "runtimes of accept, e2e, latency and disk",
    "slow_runs": "prompts of slow, one runtime each",
    "latency_requests": "paced requests of latency",
    "hot_queued": "inputs queued in the one runtime of hot and cold before they measure",
    "hot_inputs": "inputs hot times into that runtime",
    "memory_runtimes": "runtimes memory loads (3 inputs each)",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="The worker, driven black box, beside a raw consumer and Dramatiq.",
    )
    p.add_argument("--quick", action="store_true",
                   help="small sizes (" + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                    for k, v in QUICK.items())
                        + "): about a minute in all")
    for name, default in FULL.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int,
                       help=f"{HELP[name]} (default {default:,})")
    p.add_argument("--latency-rate", type=float, metavar="PER_SECOND",
                   help="the latency scenario's request rate "
                        "(default: half of the lower of accept's and e2e's rates)")
    p.add_argument("--max-concurrent-runs", type=int, default=SLOW_CONCURRENCY,
                   help=f"MEERKAT_MAX_CONCURRENT_RUNS for slow (default {SLOW_CONCURRENCY:,}; "
                        "0: the worker's own default)")
    p.add_argument("--only", action="append", metavar="NAMES",
                   help=f"comma-separated scenarios to run, of {', '.join(SCENARIOS)}")
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="PostgreSQL server on which each scenario creates its own database")
    p.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/",
                   help="RabbitMQ broker (the consistent-hash exchange plugin enabled)")
    p.add_argument("--json", type=Path, default=Path("bench-results.json"),
                   help="where to write the figures (default bench-results.json)")
    p.add_argument("--logs", type=Path, default=Path("bench-logs"),
                   help="where each session's worker log is kept (default bench-logs/)")
    p.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                   help="also run each worker scenario with the worker of CHECKOUT (another "
                        "checkout of the project, with its own .venv), just before this "
                        "checkout's: before and after, side by side, in one run")
    p.add_argument("--worker-setting", action="append", default=[], metavar="NAME=VALUE",
                   type=_setting,
                   help="a MEERKAT_* setting for every worker of this checkout (repeatable), "
                        "e.g. MEERKAT_EVENTS=run.*; with --baseline . the same code without it "
                        "runs beside")
    p.add_argument("--stall-timeout", type=float, default=60.0,
                   help="fail a wait whose count has not moved for this long (seconds)")
    return p


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.startswith("MEERKAT_"):
        raise argparse.ArgumentTypeError(f"expected MEERKAT_NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if 2 * args.memory_runtimes > MAX_CACHED_RUNTIMES:  # the warm-up's and the measured
        p.error(f"--memory-runtimes must be at most {MAX_CACHED_RUNTIMES // 2}: "
                f"the worker keeps {MAX_CACHED_RUNTIMES} runtimes loaded")
    if args.latency_rate is not None and args.latency_rate <= 0:
        p.error("--latency-rate must be positive")
    selected = [n.strip() for group in args.only or [",".join(SCENARIOS)]
                for n in group.split(",") if n.strip()]
    unknown = sorted(set(selected) - set(SCENARIOS))
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.implied = []
    if "latency" in selected and "accept" not in selected and args.latency_rate is None:
        selected.append("accept")
        args.implied.append("accept (latency runs at half its rate)")
    args.selected = [n for n in SCENARIOS if n in selected]
    return args
