"""Failures an operator can fix, in the operator's words: what kind each is and what to do.

A worker must refuse a setting it cannot work with before it takes a message, and say so in
one line, not a traceback. Every such failure is raised where it is found, as an exception of
its own layer (a URL the settings refuse never gets this far: pydantic reports it). This module
is the one table that says, for each, what kind of failure it is and which line tells the
operator what to do:

- ``configuration``: a setting names something that cannot be used: an HTTP port in use, an
  executor that does not import, a virtual host or a database that does not exist;
- ``problem``: the dependency answers but is set up otherwise than the worker needs: the broker's
  topology (shard count, queue arguments, exchange types), the database schema (not migrated, or
  migrated by a newer version), a database whose commits are not durable;
- ``unreachable``: a dependency does not answer (refused, timed out, gone);
- ``failed``: start-up failed for a reason none of the above names (:class:`StartupFailed`).

The command line turns the kind into an exit code; ``run`` lets the known ones go through and
wraps any other start-up failure in :class:`StartupFailed` (:mod:`worker.lifecycle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aiormq.exceptions import AMQPConnectionError

from persistence.errors import (
    DatabaseMissing,
    SchemaMismatch,
    StoreUnavailable,
    UnsafeDatabase,
)
from worker.connect import VhostRefused
from worker.health import PortInUse
from worker.runs.executors import ExecutorLoadError
from worker.topology import TopologyError


class Kind(StrEnum):
    CONFIGURATION = "configuration"
    PROBLEM = "problem"
    UNREACHABLE = "unreachable"
    FAILED = "failed"


@dataclass(frozen=True)
class Refusal:
    kind: Kind
    line: str
    """What is wrong and what to do, on one line."""


class StartupFailed(Exception):
    """``run`` could not start, for a reason no row of this module's table names; the log has
    the traceback (``worker_start_failed``)."""


DATABASE_ADVICE = {
    "sqlite_folder": "create it, or set MEERKAT_DATABASE_URL to a file in an existing folder",
    "sqlite_file": "run the command where the worker keeps its database, or set "
                   "MEERKAT_DATABASE_URL to that database",
    "postgresql_database": "create it (then run: meerkat-worker migrate), or set "
                           "MEERKAT_DATABASE_URL to an existing database",
}


def refusal_of(exc: BaseException) -> Refusal | None:
    """The refusal ``exc`` stands for, or ``None`` for a failure this table does not know."""
    if isinstance(exc, StartupFailed):
        return Refusal(Kind.FAILED, str(exc))
    if isinstance(exc, PortInUse | VhostRefused):
        return Refusal(Kind.CONFIGURATION, str(exc))
    if isinstance(exc, ExecutorLoadError):
        return Refusal(Kind.CONFIGURATION, f"MEERKAT_EXECUTOR: {exc}; set MEERKAT_EXECUTOR to "
                                           "the module:callable of an importable executor")
    if isinstance(exc, DatabaseMissing):
        advice = DATABASE_ADVICE.get(exc.kind, "set MEERKAT_DATABASE_URL to an existing database")
        return Refusal(Kind.CONFIGURATION, f"{exc}: {advice}")
    if isinstance(exc, SchemaMismatch):
        advice = ("run: meerkat-worker migrate" if exc.behind
                  else "run a version of meerkat-worker that knows it")
        return Refusal(Kind.PROBLEM, f"{exc}; {advice}")
    if isinstance(exc, TopologyError | UnsafeDatabase):
        return Refusal(Kind.PROBLEM, str(exc))
    if isinstance(exc, StoreUnavailable | AMQPConnectionError | ConnectionError | TimeoutError):
        return Refusal(Kind.UNREACHABLE,
                       f"cannot reach a dependency: {str(exc) or type(exc).__name__}")
    return None
