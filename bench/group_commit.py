"""Group commit against one commit per message, through the persistent driver.

Prints accepted inputs per second for both ways, side by side, measured in the same run on the
same store. Usage:

    python bench/group_commit.py [--database-url URL] [--inputs N] [--runtimes R] [--batch B]

Without ``--database-url`` it runs against a fresh SQLite file and, when the machine's
PostgreSQL answers, against a fresh PostgreSQL database too.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from uuid import uuid4

import asyncpg  # type: ignore[import-untyped]

from persistence.blobs import MemoryBlobStore
from persistence.factory import open_runtime_store
from persistence.migrate import upgrade_async
from schemas import InputEnvelope
from worker.cli.publish import build_prompt
from worker.driver import RuntimeDriver

LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/"


def workload(inputs: int, runtimes: int) -> list[InputEnvelope]:
    ids = [f"rt:bench:{uuid4()}" for _ in range(runtimes)]
    return [build_prompt(ids[i % runtimes], f"message {i}", []) for i in range(inputs)]


async def accept_all(database_url: str, envelopes: Sequence[InputEnvelope], batch: int) -> float:
    """Seconds to accept every envelope, committing ``batch`` decisions per transaction."""
    store = await open_runtime_store(database_url)
    driver = RuntimeDriver(store, MemoryBlobStore())
    try:
        started = time.perf_counter()
        for start in range(0, len(envelopes), batch):
            async with driver.batch() as commit:
                for envelope in envelopes[start:start + batch]:
                    # As the committer does: only a lone delivery looks up stored duplicates.
                    await commit.accept_input(envelope.runtime_id, envelope.input,
                                              look_up_stored=batch == 1)
                await commit.commit()
        return time.perf_counter() - started
    finally:
        await store.close()


@asynccontextmanager
async def fresh_postgres() -> AsyncIterator[str | None]:
    name = f"meerkat_bench_{uuid4().hex[:8]}"
    try:
        admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    except OSError:
        yield None
        return
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield LOCAL_POSTGRES + name
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def compare(label: str, url: str, inputs: int, runtimes: int, batch: int) -> None:
    await upgrade_async(url)
    # Fresh runtimes per way, so neither pays for the other's rows.
    single = await accept_all(url, workload(inputs, runtimes), 1)
    grouped = await accept_all(url, workload(inputs, runtimes), batch)
    print(f"{label:<12}{inputs / single:>16.0f}{inputs / grouped:>18.0f}{single / grouped:>10.1f}x")


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--runtimes", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    print(f"{args.inputs} prompts over {args.runtimes} runtimes, inputs accepted per second")
    print(f"{'store':<12}{'1 per commit':>16}{f'{args.batch} per commit':>18}{'speedup':>11}")
    if args.database_url:
        await compare("given", args.database_url, args.inputs, args.runtimes, args.batch)
        return
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/bench.db"
        await compare("sqlite", url, args.inputs, args.runtimes, args.batch)
    async with fresh_postgres() as postgres:
        if postgres is None:
            print("postgresql  (not reachable on 127.0.0.1:5432; skipped)")
        else:
            await compare("postgresql", postgres, args.inputs, args.runtimes, args.batch)


if __name__ == "__main__":
    asyncio.run(main())
