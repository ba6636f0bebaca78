"""The ``meerkat-worker`` entry point: the table of handlers, and ``main``.

The grammar (commands, arguments, options, help, shell completion) is the Typer application of
:mod:`worker.cli.parser`; it hands each parsed command to :func:`dispatch`, which loads the
settings and runs the command's handler ``cmd_<name>(args, settings) -> int``: ``run`` and
``schemas export`` here, the store commands in :mod:`worker.cli.store_commands`, the broker
commands in :mod:`worker.cli.broker_commands`, the dead-queue commands in
:mod:`worker.cli.dlq_commands`, the history checker in :mod:`worker.cli.verify`, the listing of
the workers in :mod:`worker.cli.members`. A handler's
module is imported only when its command runs (by an ``import`` inside a loader function below),
so that ``--help``, shell completion and ``schemas export`` stay fast and need none of the
service libraries.

Exit codes: 0 ok, 1 a check found problems (``topology check``, ``verify``), 2 usage or
configuration error, 3 a dependency (broker, database, blob store) cannot be reached, 4 the
worker rejected the request, 5 ``run`` failed (a part of the worker, or start-up, for a reason
of no other code), 6 ``inspect`` found no such runtime. Failures are mapped to codes by
:mod:`worker.cli.failures`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from worker.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Handler,
    settings_or_report,
)
from worker.cli.failures import exit_for
from worker.cli.parser import app
from worker.config import Settings

# --- handlers ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from worker.lifecycle import run_worker

    return run_worker(settings)


def cmd_schemas_export(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.export import export

    for path in export(args.directory):
        print(path)
    return EXIT_OK


def _entry_point_commands() -> dict[str, Handler]:
    return {"run": cmd_run, "schemas export": cmd_schemas_export}


def _store_commands() -> dict[str, Handler]:
    from worker.cli import store_commands

    return {
        "migrate": store_commands.cmd_migrate,
        "inspect": store_commands.cmd_inspect,
        "blobs gc": store_commands.cmd_blobs_gc,
    }


def _broker_commands() -> dict[str, Handler]:
    from worker.cli import broker_commands

    return {
        "topology declare": broker_commands.cmd_topology_declare,
        "topology check": broker_commands.cmd_topology_check,
        "send input": broker_commands.cmd_send_input,
        "send command": broker_commands.cmd_send_command,
    }


def _dlq_commands() -> dict[str, Handler]:
    from worker.cli import dlq_commands

    return {
        "dlq list": dlq_commands.cmd_dlq_list,
        "dlq replay": dlq_commands.cmd_dlq_replay,
        "dlq purge": dlq_commands.cmd_dlq_purge,
    }


def _members_commands() -> dict[str, Handler]:
    from worker.cli import members

    return {"members": members.cmd_members}


def _verify_commands() -> dict[str, Handler]:
    from worker.cli import verify

    return {"verify": verify.cmd_verify}


_IMPLEMENTATIONS: dict[str, Callable[[], dict[str, Handler]]] = {
    "run": _entry_point_commands,
    "migrate": _store_commands,
    "topology declare": _broker_commands,
    "topology check": _broker_commands,
    "send input": _broker_commands,
    "send command": _broker_commands,
    "inspect": _store_commands,
    "members": _members_commands,
    "dlq list": _dlq_commands,
    "dlq replay": _dlq_commands,
    "dlq purge": _dlq_commands,
    "blobs gc": _store_commands,
    "schemas export": _entry_point_commands,
    "verify": _verify_commands,
}
"""Each command -> the loader that imports its module and names its handlers."""


def handler_for(command: str) -> Handler:
    return _IMPLEMENTATIONS[command]()[command]


# --- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run the command, return its exit code.
    Help, ``--version`` and shell completion exit 0, usage errors 2."""
    try:
        app(args=None if argv is None else list(argv), prog_name=PROG, obj=dispatch,
            standalone_mode=True)
    except SystemExit as exc:
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return EXIT_OK


def dispatch(command: str, args: argparse.Namespace) -> int:
    """Run a parsed command: load the settings, then its handler; failures become exit codes."""
    settings = settings_or_report()
    if settings is None:
        return EXIT_USAGE
    try:
        return handler_for(command)(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a known failure is one line and its exit code
        code = exit_for(exc, settings, command)
        if code is None:
            raise
        return code
