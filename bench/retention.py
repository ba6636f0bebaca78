"""``python -m bench.retention``: storage under a steady stream, with the pruner at work.

An in-process worker (the same :class:`worker.app.Worker` as ``meerkat-worker run``) on a fresh
PostgreSQL database, a topology prefix of its own and a ``file://`` blob store in a temporary
directory takes ``--rounds`` rounds of ``--prompts`` prompts over ``--runtimes`` runtimes. The
outbox retention and the dedupe window are seconds (``--retention``, ``--window``) and the
pruner runs every second, so a pause of ``--pause`` seconds after each round lets everything
older than them go. After each round the table prints the rows of ``event_outbox`` (and how many
are unsent), ``inputs``, ``boundary_receipts`` and ``processed_commands``, the size on disk of
the first two (``pg_total_relation_size``, indexes and TOAST included), and what the pruner
deleted so far. Without the pruner the row counts would grow by one round's worth every round;
with it they stay flat once the window has passed. ``peak`` is the row count of outbox and
inputs right after a round settled (one round's worth while the pruner has not caught up).
Sizes on disk do not shrink after a DELETE: PostgreSQL reuses the space once a vacuum has marked
it free. Autovacuum does that in its own time (a minute or more between looks), so a run of a
minute shows the files growing; ``--vacuum`` runs a plain ``VACUUM`` of the pruned tables after
each round, as autovacuum would in a long run, and the sizes then stay flat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass
from uuid import uuid4

import aio_pika
import asyncpg  # type: ignore[import-untyped]
from pydantic import SecretStr

from bench.services import Prefix, bind_event_sink, delete_broker_names, fresh_database, with_scheme
from persistence.migrate import upgrade_async
from worker.app import Worker
from worker.cli.publish import build_prompt, publish_envelope
from worker.config import Settings
from worker.topology import Topology

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
SETTLE_TIMEOUT_SECONDS = 300.0

_COUNTS = """
SELECT (SELECT count(*) FROM event_outbox) AS events,
       (SELECT count(*) FROM event_outbox WHERE sent_at IS NULL) AS unsent,
       (SELECT count(*) FROM inputs) AS inputs,
       (SELECT count(*) FROM boundary_receipts) AS receipts,
       (SELECT count(*) FROM processed_commands) AS commands,
       pg_total_relation_size('event_outbox') AS outbox_bytes,
       pg_total_relation_size('inputs') AS inputs_bytes
"""
_PRUNED_TABLES = ("event_outbox", "inputs", "boundary_receipts", "processed_commands")


@dataclass(frozen=True)
class Round:
    number: int
    published: int
    peak_events: int
    peak_inputs: int
    events: int
    unsent: int
    inputs: int
    receipts: int
    commands: int
    outbox_bytes: int
    inputs_bytes: int
    deleted_events: int
    deleted_inputs: int

    HEADER = ("round | published | peak outbox/inputs | outbox rows (unsent) | inputs | "
              "receipts | commands | outbox KiB | inputs KiB | pruned events | pruned inputs")

    def line(self) -> str:
        return (f"{self.number} | {self.published} | {self.peak_events}/{self.peak_inputs} | "
                f"{self.events} ({self.unsent}) | "
                f"{self.inputs} | {self.receipts} | {self.commands} | "
                f"{self.outbox_bytes // 1024} | {self.inputs_bytes // 1024} | "
                f"{self.deleted_events} | {self.deleted_inputs}")


async def run(args: argparse.Namespace) -> list[Round]:
    rounds: list[Round] = []
    async with fresh_database(args.database_url) as url, contextlib.AsyncExitStack() as stack:
        await upgrade_async(with_scheme(url, "postgresql+asyncpg"))
        blobs = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-blobs-"))
        prefix = Prefix.fresh(shards=4)
        settings = Settings(
            amqp_url=SecretStr(args.amqp_url),
            database_url=SecretStr(with_scheme(url, "postgresql+asyncpg")),
            blob_url=SecretStr(f"file://{blobs}"), shards=prefix.shards, http_port=0,
            topology_prefix=prefix.name, outbox_retention_seconds=args.retention,
            dedupe_window_seconds=args.window, retention_interval_seconds=1.0,
            log_format="console",
        )
        connection = await aio_pika.connect_robust(args.amqp_url)
        stack.push_async_callback(connection.close)
        stack.push_async_callback(delete_broker_names, connection,
                                  [*prefix.queues(), prefix.event_sink], prefix.exchanges())
        worker = Worker(settings, Topology.from_settings(settings), serve_http=False)
        await worker.start()
        stack.push_async_callback(worker.stop)
        await bind_event_sink(connection, prefix)
        channel = await connection.channel(publisher_confirms=True)
        database = await asyncpg.connect(url)
        stack.push_async_callback(database.close)
        runtimes = [f"rt:retention:{uuid4()}" for _ in range(args.runtimes)]
        published = 0
        for number in range(1, args.rounds + 1):
            for k in range(args.prompts):
                envelope = build_prompt(runtimes[k % len(runtimes)], f"round {number} #{k}", [])
                await publish_envelope(channel, envelope, topology=worker.topology)
            published += args.prompts
            assert worker.committer is not None
            await asyncio.wait_for(worker.committer.wait_settled(published),
                                   SETTLE_TIMEOUT_SECONDS)
            await asyncio.wait_for(worker.run_until_idle(), SETTLE_TIMEOUT_SECONDS)
            peak = await database.fetchrow(_COUNTS)
            await asyncio.sleep(args.pause)  # pacing: the stream's gap between rounds
            if args.vacuum:
                for table in _PRUNED_TABLES:
                    await database.execute(f"VACUUM {table}")
            row = await database.fetchrow(_COUNTS)
            assert worker.retention is not None
            deleted = worker.retention.deleted
            rounds.append(Round(number, published, peak["events"], peak["inputs"],
                                row["events"], row["unsent"], row["inputs"], row["receipts"],
                                row["commands"], row["outbox_bytes"], row["inputs_bytes"],
                                deleted.events, deleted.inputs))
            print(rounds[-1].line(), flush=True)
    return rounds


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    p.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--prompts", type=int, default=500, help="prompts per round")
    p.add_argument("--runtimes", type=int, default=20)
    p.add_argument("--retention", type=float, default=2.0, help="outbox retention, seconds")
    p.add_argument("--window", type=float, default=4.0, help="dedupe window, seconds")
    p.add_argument("--pause", type=float, default=6.0, help="seconds between rounds")
    p.add_argument("--vacuum", action="store_true",
                   help="VACUUM the pruned tables after each round (as autovacuum would)")
    return p


def main() -> None:
    args = parser().parse_args()
    print(f"{args.rounds} rounds of {args.prompts} prompts over {args.runtimes} runtimes; "
          f"outbox retention {args.retention} s, dedupe window {args.window} s, "
          f"{args.pause} s between rounds")
    print(Round.HEADER)
    started = time.monotonic()
    asyncio.run(run(args))
    print(f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
