"""The ``meerkat-worker`` command line.

Each command is a handler ``cmd_<name>(args, settings) -> int`` in ``worker.cli_ops`` (store
and worker commands), ``worker.cli_broker`` (broker commands) or ``worker.cli_verify`` (the
history checker), imported when it runs.

Exit codes: 0 ok, 1 a check found problems (``topology check``, ``verify``), 2 usage or
configuration error, 3 a dependency (broker, database, blob store) cannot be reached, 4 the
worker rejected the request.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias
from uuid import UUID

from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from persistence.errors import StoreUnavailable
from schemas import COMMAND_TYPES, RUNTIME_ID_PATTERN
from worker.config import ENV_PREFIX, SECRET_FIELDS, Settings, load_settings, mask_url

PROG = "meerkat-worker"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_REJECTED = 4

Handler = Callable[[argparse.Namespace, Settings], int]

if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


# --- handlers ---------------------------------------------------------------------------------
# Each command's implementation is imported only when that command runs, so that ``--help`` and
# ``schemas export`` stay fast and need none of the service libraries.

_IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "run": ("worker.cli_ops", "cmd_run"),
    "migrate": ("worker.cli_ops", "cmd_migrate"),
    "topology declare": ("worker.cli_broker", "cmd_topology_declare"),
    "topology check": ("worker.cli_broker", "cmd_topology_check"),
    "send input": ("worker.cli_broker", "cmd_send_input"),
    "send command": ("worker.cli_broker", "cmd_send_command"),
    "inspect": ("worker.cli_ops", "cmd_inspect"),
    "dlq list": ("worker.cli_broker", "cmd_dlq_list"),
    "dlq replay": ("worker.cli_broker", "cmd_dlq_replay"),
    "blobs gc": ("worker.cli_ops", "cmd_blobs_gc"),
    "schemas export": ("worker.cli", "cmd_schemas_export"),
    "verify": ("worker.cli_verify", "cmd_verify"),
}


def handler_for(command: str) -> Handler:
    module, name = _IMPLEMENTATIONS[command]
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler


def cmd_schemas_export(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.export import export

    for path in export(args.directory):
        print(path)
    return EXIT_OK


# --- argument types ---------------------------------------------------------------------------


def runtime_id(text: str) -> str:
    if not re.fullmatch(RUNTIME_ID_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"not a runtime id (1..200 of A-Z a-z 0-9 : . _ -): {text!r}"
        )
    return text


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def key(text: str) -> str:
    if not 1 <= len(text) <= 256:
        raise argparse.ArgumentTypeError("a key is 1..256 characters")
    return text


def positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return number


_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d`` or a combination such as ``1h30m``."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration like 24h, 30m, 90s, 7d: {text!r}")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


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
    try:
        settings = load_settings()
    except (ValidationError, SettingsError) as exc:
        print(f"{PROG}: invalid configuration: {describe_config_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return handler_for(args.command)(args, settings)
    except dependency_errors() as exc:
        print(f"{PROG} {args.command}: cannot reach a dependency: "
              f"{scrub(str(exc) or type(exc).__name__, settings)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except topology_errors() as exc:  # e.g. ``run`` against shard queues declared otherwise
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def topology_errors() -> tuple[type[BaseException], ...]:
    from worker.topology import TopologyError

    return (TopologyError,)


def dependency_errors() -> tuple[type[BaseException], ...]:
    from aiormq.exceptions import AMQPConnectionError

    amqp: type[BaseException] = AMQPConnectionError
    return StoreUnavailable, amqp, ConnectionError, TimeoutError


def describe_config_error(exc: ValidationError | SettingsError) -> str:
    if isinstance(exc, SettingsError):
        return str(exc)
    # Only locations and messages: an input value could be a secret.
    return "; ".join(
        ENV_PREFIX + "__".join(str(part) for part in error["loc"]).upper() + ": " + error["msg"]
        for error in exc.errors()
    )


def scrub(text: str, settings: Settings) -> str:
    """The text with every configured secret URL masked, whatever library wrote it."""
    for name in SECRET_FIELDS:
        secret: SecretStr | None = getattr(settings, name)
        if secret is None:
            continue
        raw = secret.get_secret_value()
        text = text.replace(raw, mask_url(raw))
    return text


if __name__ == "__main__":
    sys.exit(main())
