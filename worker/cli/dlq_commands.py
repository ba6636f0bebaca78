"""The dead-queue commands of the command line: ``dlq list``, ``dlq replay`` and ``dlq purge``.

Each ``cmd_*`` handler has the :data:`worker.cli.common.Handler` signature; the coroutines take
the ``Topology`` explicitly so that tests can point them at their own names. All three take the
filter options (``--reason``, ``--runtime``, ``--older-than``, ``--newer-than``; see
:mod:`worker.cli.dead_letters`) and ``--limit``, which counts the messages that match.

- ``list`` prints one line per message, a table on a terminal, or with ``--json`` one JSON
  document per line; the messages stay in the queue.
- ``replay`` re-publishes what matches (:func:`worker.cli.dlq.replay_selected`); ``--dry-run``
  lists what it would replay and touches nothing.
- ``purge`` deletes what matches. It first counts the matches and asks, on a terminal, whether
  to delete that many (and then deletes at most that many, so that a message dead-lettered
  after the question is not taken); ``--yes`` skips the question. Without a terminal to ask on
  and without ``--yes`` it refuses (exit 2) before connecting.

All three draw a progress bar on a terminal (:mod:`worker.cli.progress`): a listing, like a
replay or purge that passes messages over, goes through the whole dead queue (see
:mod:`worker.cli.dlq` for why).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from worker.cli.broker_commands import broker, broker_user, run_on_broker
from worker.cli.common import EXIT_OK, EXIT_USAGE, fail
from worker.cli.dead_letters import DeadLetter, DeadLetterFilter
from worker.cli.dlq import Sweep, list_dead, purge_selected, replay_selected
from worker.cli.progress import progress_bar
from worker.config import Settings
from worker.topology import Topology

DEFAULT_LIST_LIMIT = 100


# --- handlers ---------------------------------------------------------------------------------


def cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    return run_on_broker(show_dead(args, settings, Topology.from_settings(settings)), settings)


def cmd_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    return run_on_broker(replay(args, settings, Topology.from_settings(settings)), settings)


def cmd_dlq_purge(args: argparse.Namespace, settings: Settings) -> int:
    if not getattr(args, "yes", False) and not sys.stdin.isatty():
        return fail("refusing to purge without --yes: standard input is not a terminal to ask on",
                    EXIT_USAGE, "dlq purge")
    return run_on_broker(purge(args, settings, Topology.from_settings(settings)), settings)


def selection(args: argparse.Namespace) -> DeadLetterFilter:
    """The filter the options give (any left out select every message)."""
    return DeadLetterFilter(
        reason=getattr(args, "reason", None),
        runtime=getattr(args, "runtime", None),
        older_than=getattr(args, "older_than", None),
        newer_than=getattr(args, "newer_than", None),
    )


# --- commands ---------------------------------------------------------------------------------


async def show_dead(args: argparse.Namespace, settings: Settings, topology: Topology) -> int:
    """``dlq list [FILTERS] [--limit N] [--json]``: the messages stay in the dead queue."""
    limit = getattr(args, "limit", None) or DEFAULT_LIST_LIMIT
    async with broker(settings) as connection:
        channel = await connection.channel()
        with progress_bar("reading dead letters") as progress:
            dead = await list_dead(channel, limit, topology=topology, select=selection(args),
                                   progress=progress)
    if getattr(args, "json", False):
        for letter in dead:
            print(json.dumps(letter.to_json()))
        return EXIT_OK
    if sys.stdout.isatty():
        Console().print(dead_letter_table(dead))
    else:
        for letter in dead:
            print(letter.describe())
    print(f"{len(dead)} dead-lettered message(s) shown from {topology.dead_queue}"
          + (f" (at most {limit})" if len(dead) == limit else ""))
    return EXIT_OK


def dead_letter_table(dead: list[DeadLetter]) -> Table:
    """The listing as a table (for a terminal)."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("MESSAGE ID", "TYPE", "RUNTIME", "DEAD-LETTERED", "REASON"):
        table.add_column(column, overflow="fold")
    for letter in dead:
        death = letter.death_reason or ""
        if letter.first_death_queue:
            death += f" in {letter.first_death_queue}"
        when = letter.dead_lettered_at.isoformat(timespec="seconds") if (
            letter.dead_lettered_at is not None) else "-"
        table.add_row(letter.message_id or "-", letter.message_type or "-",
                      letter.runtime_id or "-", when, letter.error or death or "-")
    return table


async def replay(args: argparse.Namespace, settings: Settings, topology: Topology) -> int:
    """``dlq replay [FILTERS] [--limit N] [--dry-run]``."""
    select = selection(args)
    limit = getattr(args, "limit", None)
    destination = (f"to {topology.ingress_exchange} "
                   f"(commands through {topology.commands_exchange})")
    async with broker(settings) as connection:
        if getattr(args, "dry_run", False):
            channel = await connection.channel()
            dead = await list_dead(channel, limit, topology=topology, select=select)
            for letter in dead:
                print(f"would replay {letter.describe()}")
            print(f"would replay {len(dead)} message(s) from {topology.dead_queue} {destination}")
            return EXIT_OK
        channel = await connection.channel()
        with progress_bar("replaying dead letters") as progress:
            sweep = await replay_selected(channel, limit, topology=topology,
                                          user_id=broker_user(settings), select=select,
                                          progress=progress)
    print(f"replayed {sweep.taken} message(s) from {topology.dead_queue} {destination}"
          + _passed_over(sweep, select))
    return EXIT_OK


async def purge(args: argparse.Namespace, settings: Settings, topology: Topology) -> int:
    """``dlq purge [FILTERS] [--limit N] [--yes]``."""
    select = selection(args)
    limit = getattr(args, "limit", None)
    async with broker(settings) as connection:
        channel = await connection.channel()
        if not getattr(args, "yes", False):
            matching = len(await list_dead(channel, limit, topology=topology, select=select))
            if not matching:
                print(f"no dead-lettered message matches in {topology.dead_queue}; "
                      "nothing purged")
                return EXIT_OK
            if not await asyncio.to_thread(_confirm, matching, topology.dead_queue, select):
                print("nothing purged")
                return EXIT_OK
            limit = matching
        with progress_bar("purging dead letters") as progress:
            sweep = await purge_selected(channel, limit, topology=topology, select=select,
                                         progress=progress)
    print(f"purged {sweep.taken} message(s) from {topology.dead_queue}"
          + _passed_over(sweep, select))
    return EXIT_OK


def _confirm(count: int, queue: str, select: DeadLetterFilter) -> bool:
    which = "" if select.selects_all else f" matching {select.describe()}"
    try:
        return typer.confirm(f"Delete {count} dead-lettered message(s){which} from {queue}?",
                             default=False, err=True)
    except typer.Abort:  # end of input: no answer is no
        return False


def _passed_over(sweep: Sweep, select: DeadLetterFilter) -> str:
    if select.selects_all:
        return ""
    return f"; {sweep.passed_over} not matching left in place"
