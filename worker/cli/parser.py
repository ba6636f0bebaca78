"""The grammar of ``meerkat-worker``: every command, argument and option, as a Typer application.

Parsing only. Each command function packs its parameters into a namespace (the names the
handlers read) and hands it, with the command's name (``"dlq list"``), to the dispatcher that
the caller put in the click context's ``obj`` (:func:`worker.cli.main.main` passes one that loads
the settings, imports the command's module and maps failures to exit codes). Nothing here
imports a command's implementation, so ``--help`` and shell completion load none of the broker,
database or blob-store libraries.

Values are checked by the argument types of :mod:`worker.cli.common`; a value they refuse is a
usage error (exit code 2), as is an unknown command or option or a missing argument. Typer adds
``--install-completion`` and ``--show-completion`` (bash, zsh, fish, PowerShell).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args
from uuid import UUID

import typer
from typer.core import TyperCommand

from schemas import COMMAND_TYPES
from schemas.states import SimpleAbandonCode
from worker.cli import common
from worker.config import ENV_PREFIX

T = TypeVar("T")
Dispatch = Callable[[str, argparse.Namespace], int]
"""A command's name and its parsed arguments in, the exit code out."""

ABANDON_REASONS: tuple[str, ...] = get_args(SimpleAbandonCode)
FILTERS = "Filters (all given must match)"


def _checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` with its ``ValueError`` turned into a usage error showing its message."""

    def checked(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None

    return checked


def _choice(what: str, values: Iterable[str]) -> Callable[[str], str]:
    allowed = tuple(values)

    def choose(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"not {what}: {text!r} (one of: {', '.join(allowed)})")
        return text

    return _checked(choose)


def _completing(values: Iterable[str]) -> Callable[[str], list[str]]:
    allowed = tuple(values)
    return lambda incomplete: [value for value in allowed if value.startswith(incomplete)]


def _go(ctx: typer.Context, command: str, **arguments: Any) -> None:
    dispatch: Dispatch = ctx.obj
    code = dispatch(command, argparse.Namespace(**arguments))
    if code:
        raise typer.Exit(code)


# --- argument and option types ----------------------------------------------------------------

Runtime = Annotated[str, typer.Argument(metavar="RUNTIME", parser=_checked(common.runtime_id),
                                        show_default=False, help="the runtime id")]
AsJson = Annotated[bool, typer.Option("--json", help="print one JSON document")]
Wait = Annotated[bool, typer.Option("--wait", help="wait for the worker's reply and print it")]
Timeout = Annotated[float, typer.Option("--timeout", metavar="S",
                                        help="with --wait: seconds to wait for the reply")]
Reason = Annotated[str | None, typer.Option(
    "--reason", metavar="TEXT", rich_help_panel=FILTERS, show_default=False,
    help="the reason (x-meerkat-error, or the broker's x-death reason such as delivery_limit) "
         "contains TEXT, e.g. image_invalid")]
RuntimePattern = Annotated[str | None, typer.Option(
    "--runtime", metavar="RUNTIME", rich_help_panel=FILTERS, show_default=False,
    help="the runtime id is RUNTIME; * and ? match any text and any one character")]
OlderThan = Annotated[timedelta | None, typer.Option(
    "--older-than", metavar="DURATION", parser=_checked(common.duration),
    rich_help_panel=FILTERS, show_default=False,
    help="dead-lettered more than DURATION ago (30s, 5m, 2h, 1d, 1h30m)")]
NewerThan = Annotated[timedelta | None, typer.Option(
    "--newer-than", metavar="DURATION", parser=_checked(common.duration),
    rich_help_panel=FILTERS, show_default=False,
    help="dead-lettered less than DURATION ago")]


def _limit(help_text: str) -> Any:
    return typer.Option("--limit", metavar="N", parser=_checked(common.positive_int),
                        show_default=False, help=help_text)


# --- the application --------------------------------------------------------------------------

app = typer.Typer(
    name=common.PROG,
    help="Consume meerkat runtime inputs and commands from RabbitMQ; ack after commit.",
    epilog=(f"Configuration comes from {ENV_PREFIX}* environment variables and a .env file "
            "(meerkat-worker run --help lists them). Exit codes: 0 ok, 1 a check found "
            "problems, 2 usage or configuration error, 3 a dependency cannot be reached or no "
            "reply came in time, 4 rejected by the worker, 5 a part of the worker failed."),
    no_args_is_help=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["--help", "-h"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"{common.PROG} {_version()}")
        raise typer.Exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meerkat-worker")
    except PackageNotFoundError:
        return "unknown"


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """The program's own options (the application's help text is the one above)."""


def _group(name: str, summary: str) -> typer.Typer:
    group = typer.Typer(help=summary, no_args_is_help=False, rich_markup_mode="rich")
    app.add_typer(group, name=name)
    return group


class RunCommand(TyperCommand):
    """``run``: its help ends with every setting and its default (:mod:`.settings_help`)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        import os

        from rich.console import Console

        from worker.cli.settings_help import settings_panel

        width = os.environ.get("TERMINAL_WIDTH")
        Console(width=int(width) if width and width.isdigit() else None).print(settings_panel())


@app.command("run", cls=RunCommand, epilog=(
    f"Secrets (the four URLs) may come from files: {ENV_PREFIX}<NAME>_FILE=/path."))
def run(ctx: typer.Context) -> None:
    """Consume and process until SIGTERM/SIGINT (graceful drain within
    MEERKAT_SHUTDOWN_GRACE_SECONDS)."""
    _go(ctx, "run")


@app.command("migrate")
def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the database schema (Alembic), idempotent; says what it applied."""
    _go(ctx, "migrate")


topology = _group("topology", "Broker exchanges and queues.")


@topology.command("declare")
def topology_declare(ctx: typer.Context) -> None:
    """Declare exchanges and queues (idempotent)."""
    _go(ctx, "topology declare")


@topology.command("check")
def topology_check(ctx: typer.Context) -> None:
    """Verify exchanges, queues and broker plugins."""
    _go(ctx, "topology check")


send = _group("send", "Publish a prompt or a lifecycle command.")


@send.command("input")
def send_input(
    ctx: typer.Context,
    runtime: Runtime,
    text: Annotated[str, typer.Option("--text", metavar="T", help="the prompt text")],
    image: Annotated[list[Path] | None, typer.Option(
        "--image", metavar="FILE", parser=_checked(common.existing_file), show_default=False,
        help="attach an image (PNG, JPEG, GIF, WebP); repeatable")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", metavar="K", parser=_checked(common.key), show_default=False,
        help="the input's idempotency key (1..256 characters)")] = None,
    wait: Wait = False,
    timeout: Timeout = 30.0,
) -> None:
    """Publish a prompt input to the ingress exchange; prints its id (and with --wait the
    accept outcome)."""
    _go(ctx, "send input", runtime=runtime, text=text, image=image or [],
        idempotency_key=idempotency_key, wait=wait, timeout=timeout)


@send.command("command")
def send_command(
    ctx: typer.Context,
    runtime: Runtime,
    name: Annotated[str, typer.Argument(
        metavar="NAME", parser=_choice("a command", COMMAND_TYPES),
        autocompletion=_completing(COMMAND_TYPES), show_default=False,
        help="one of: " + ", ".join(COMMAND_TYPES))],
    reason: Annotated[str | None, typer.Option(
        "--reason", metavar="R", show_default=False,
        help="free text recorded with the command")] = None,
    input_id: Annotated[UUID | None, typer.Option(
        "--input-id", metavar="ID", parser=_checked(common.uuid), show_default=False,
        help="for abandon_input: the input to abandon")] = None,
    abandon_reason: Annotated[str | None, typer.Option(
        "--abandon-reason", metavar="A", parser=_choice("an abandon reason", ABANDON_REASONS),
        autocompletion=_completing(ABANDON_REASONS), show_default=False,
        help="for abandon_pending and abandon_input (default cancelled): "
             + ", ".join(ABANDON_REASONS))] = None,
    wait: Wait = False,
    timeout: Timeout = 30.0,
) -> None:
    """Publish a lifecycle command to the commands exchange, with the user of
    MEERKAT_AMQP_URL as user_id; prints its id (and with --wait the outcome)."""
    _go(ctx, "send command", runtime=runtime, name=name, reason=reason, input_id=input_id,
        abandon_reason=abandon_reason, wait=wait, timeout=timeout)


@app.command("inspect")
def inspect(ctx: typer.Context, runtime: Runtime, as_json: AsJson = False) -> None:
    """Show a runtime's state, inputs by phase, last receipts and events."""
    _go(ctx, "inspect", runtime=runtime, json=as_json)


@app.command("members")
def members(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the deployment's workers: their state, version, heartbeat age and the shards each
    consumes, and any shard no live worker consumes."""
    _go(ctx, "members", json=as_json)


dlq = _group("dlq", "Dead-lettered messages (queue meerkat.dead).")


@dlq.command("list")
def dlq_list(
    ctx: typer.Context,
    reason: Reason = None,
    runtime: RuntimePattern = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    limit: Annotated[int, _limit("show at most N matching messages")] = 100,
    as_json: Annotated[bool, typer.Option(
        "--json", help="one JSON document per line, one per message")] = False,
) -> None:
    """Show dead-lettered messages and their reasons; they stay in the queue."""
    _go(ctx, "dlq list", reason=reason, runtime=runtime, older_than=older_than,
        newer_than=newer_than, limit=limit, json=as_json)


@dlq.command("replay")
def dlq_replay(
    ctx: typer.Context,
    reason: Reason = None,
    runtime: RuntimePattern = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    limit: Annotated[int | None, _limit("replay at most N matching messages")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="list what would be replayed; replay nothing")] = False,
) -> None:
    """Re-publish dead-lettered messages (inputs to meerkat.ingress, commands to
    meerkat.commands); the others stay in the dead queue, in their order."""
    _go(ctx, "dlq replay", reason=reason, runtime=runtime, older_than=older_than,
        newer_than=newer_than, limit=limit, dry_run=dry_run)


@dlq.command("purge")
def dlq_purge(
    ctx: typer.Context,
    reason: Reason = None,
    runtime: RuntimePattern = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    limit: Annotated[int | None, _limit("delete at most N matching messages")] = None,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="do not ask for confirmation (needed without a terminal)")] = False,
) -> None:
    """Delete dead-lettered messages for good, after asking (dlq list with the same filters
    shows which)."""
    _go(ctx, "dlq purge", reason=reason, runtime=runtime, older_than=older_than,
        newer_than=newer_than, limit=limit, yes=yes)


blobs = _group("blobs", "The blob store.")


@blobs.command("gc")
def blobs_gc(
    ctx: typer.Context,
    grace: Annotated[timedelta | None, typer.Option(
        "--grace", metavar="DURATION", parser=_checked(common.duration), show_default=False,
        help="keep blobs younger than this (default 24h)")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="only list what would be deleted")] = False,
) -> None:
    """Delete blobs no runtime references and older than the grace period."""
    _go(ctx, "blobs gc", grace=grace or timedelta(hours=24), dry_run=dry_run)


schemas = _group("schemas", "The wire contract.")


@schemas.command("export")
def schemas_export(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", show_default=False,
                                              help="where to write them")],
) -> None:
    """Write the JSON Schemas (draft 2020-12) and the AsyncAPI 3.0 document."""
    _go(ctx, "schemas export", directory=directory)


@app.command("verify")
def verify(
    ctx: typer.Context,
    published: Annotated[Path, typer.Option(
        "--published", metavar="FILE", parser=_checked(common.existing_file),
        show_default=False, help="the producer's log of published messages (JSON lines)")],
    events: Annotated[Path | None, typer.Option(
        "--events", metavar="FILE", parser=_checked(common.existing_file), show_default=False,
        help="a capture of the events exchange (JSON lines); without it, outbox events not "
             "marked sent are counted")] = None,
    as_json: AsJson = False,
) -> None:
    """Check the store, events and dead queue against a producer's published log."""
    _go(ctx, "verify", published=published, events=events, json=as_json)
