"""The ``meerkat-worker`` entry point: the parser, the table of handlers, and ``main``.

Each command is a handler ``cmd_<name>(args, settings) -> int``: ``run`` and ``schemas export``
here, the store commands in :mod:`worker.cli.store_commands`, the broker commands in
:mod:`worker.cli.broker_commands`, the history checker in :mod:`worker.cli.verify`. A handler's
module is imported only when its command runs (by an ``import`` inside a loader function below),
so that ``--help`` and ``schemas export`` stay fast and need none of the service libraries.

Exit codes: 0 ok, 1 a check found problems (``topology check``, ``verify``), 2 usage or
configuration error, 3 a dependency (broker, database, blob store) cannot be reached, 4 the
worker rejected the request.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from persistence.errors import StoreUnavailable
from schemas import COMMAND_TYPES
from worker.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    PROG,
    Handler,
    duration,
    existing_file,
    fail,
    key,
    positive_int,
    runtime_id,
    scrub,
    settings_or_report,
    uuid,
)
from worker.config import ENV_PREFIX, Settings

if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


# --- handlers ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from worker import tracing
    from worker.app import serve
    from worker.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    tracing.configure(install_global=True)
    try:
        return asyncio.run(serve(settings))
    finally:
        tracing.shutdown()


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
        "dlq list": broker_commands.cmd_dlq_list,
        "dlq replay": broker_commands.cmd_dlq_replay,
    }


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
    "dlq list": _broker_commands,
    "dlq replay": _broker_commands,
    "blobs gc": _store_commands,
    "schemas export": _entry_point_commands,
    "verify": _verify_commands,
}
"""Each command -> the loader that imports its module and names its handlers."""


def handler_for(command: str) -> Handler:
    return _IMPLEMENTATIONS[command]()[command]


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Consume meerkat runtime inputs and commands from RabbitMQ; ack after commit.",
        epilog=f"Configuration comes from {ENV_PREFIX}* environment variables and a .env file.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    _command(commands, "run", "consume and process until SIGTERM/SIGINT (graceful drain)")
    _command(commands, "migrate", "create or upgrade the database schema (idempotent)")
    _add_topology(commands)
    _add_send(commands)
    inspect_ = _command(commands, "inspect", "show a runtime's state, inputs, receipts, events")
    inspect_.add_argument("runtime", type=runtime_id, metavar="RUNTIME")
    inspect_.add_argument("--json", action="store_true", help="print one JSON document")
    _add_dlq(commands)
    _add_blobs(commands)
    _add_schemas(commands)
    _add_verify(commands)
    return parser


def _command(
    commands: Commands, name: str, summary: str, command: str = ""
) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=summary, description=summary)
    sub.set_defaults(command=command or name)
    return sub


def _group(commands: Commands, name: str, summary: str) -> Commands:
    group = commands.add_parser(name, help=summary, description=summary)
    return group.add_subparsers(title="commands", metavar="COMMAND", required=True)


def _add_topology(commands: Commands) -> None:
    topology = _group(commands, "topology", "broker exchanges and queues")
    _command(topology, "declare", "declare exchanges and queues (idempotent)", "topology declare")
    _command(topology, "check", "verify exchanges, queues and broker plugins", "topology check")


def _add_send(commands: Commands) -> None:
    send = _group(commands, "send", "publish a message to the ingress exchange")
    prompt = _command(send, "input", "publish a prompt input", "send input")
    prompt.add_argument("runtime", type=runtime_id, metavar="RUNTIME")
    prompt.add_argument("--text", required=True, metavar="T", help="the prompt text")
    prompt.add_argument(
        "--image", type=existing_file, action="append", default=[], metavar="FILE",
        help="attach an image (PNG, JPEG, GIF, WebP); repeatable",
    )
    prompt.add_argument("--idempotency-key", type=key, metavar="K")
    prompt.add_argument("--wait", action="store_true", help="print the accept outcome")
    prompt.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="with --wait: seconds to wait for the reply (default 30)")

    command = _command(send, "command", "publish a lifecycle command", "send command")
    command.add_argument("runtime", type=runtime_id, metavar="RUNTIME")
    command.add_argument("name", choices=COMMAND_TYPES, metavar="NAME",
                         help="one of: " + ", ".join(COMMAND_TYPES))
    command.add_argument("--reason", metavar="R", help="free text recorded with the command")
    command.add_argument("--input-id", type=uuid, metavar="ID", help="for abandon_input")
    command.add_argument("--wait", action="store_true", help="print the outcome")
    command.add_argument("--timeout", type=float, default=30.0, metavar="S",
                         help="with --wait: seconds to wait for the reply (default 30)")


def _add_dlq(commands: Commands) -> None:
    dlq = _group(commands, "dlq", "dead-lettered messages (queue meerkat.dead)")
    listing = _command(dlq, "list", "show dead-lettered messages and their reasons", "dlq list")
    listing.add_argument("--limit", type=positive_int, default=100, metavar="N",
                         help="show at most N messages (default 100)")
    listing.add_argument("--json", action="store_true", help="one JSON document per message")
    replay = _command(dlq, "replay", "re-publish dead-lettered messages", "dlq replay")
    replay.add_argument("--limit", type=positive_int, metavar="N",
                        help="replay at most N messages")


def _add_blobs(commands: Commands) -> None:
    blobs = _group(commands, "blobs", "the blob store")
    gc = _command(blobs, "gc", "delete blobs no runtime references", "blobs gc")
    gc.add_argument("--grace", type=duration, default=timedelta(hours=24), metavar="DURATION",
                    help="keep blobs younger than this (default 24h)")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be deleted")


def _add_schemas(commands: Commands) -> None:
    schemas = _group(commands, "schemas", "the wire contract")
    export = _command(schemas, "export", "write the JSON Schemas and the AsyncAPI document",
                      "schemas export")
    export.add_argument("directory", type=Path, metavar="DIR")


def _add_verify(commands: Commands) -> None:
    verify = _command(commands, "verify",
                      "check the store, events and dead queue against a published log")
    verify.add_argument("--published", type=existing_file, required=True, metavar="FILE",
                        help="the producer's log of published messages (JSON lines)")
    verify.add_argument("--events", type=existing_file, metavar="FILE",
                        help="a capture of the events exchange (JSON lines); without it, "
                             "outbox events not marked sent are counted")
    verify.add_argument("--json", action="store_true", help="print one JSON document")


def _version() -> str:
    try:
        return version("meerkat-worker")
    except PackageNotFoundError:
        return "unknown"


# --- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    settings = settings_or_report()
    if settings is None:
        return EXIT_USAGE
    try:
        return handler_for(args.command)(args, settings)
    except dependency_errors() as exc:
        return fail("cannot reach a dependency: "
                    f"{scrub(str(exc) or type(exc).__name__, settings)}",
                    EXIT_UNAVAILABLE, args.command)
    except topology_errors() as exc:  # e.g. ``run`` against shard queues declared otherwise
        return fail(str(exc), EXIT_FAILED, args.command)
    except KeyboardInterrupt:
        return 130


def topology_errors() -> tuple[type[BaseException], ...]:
    from worker.topology import TopologyError

    return (TopologyError,)


def dependency_errors() -> tuple[type[BaseException], ...]:
    from aiormq.exceptions import AMQPConnectionError

    amqp: type[BaseException] = AMQPConnectionError
    return StoreUnavailable, amqp, ConnectionError, TimeoutError
