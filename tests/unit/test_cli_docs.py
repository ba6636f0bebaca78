"""The README says what the command line and the settings model are: its command table names
every command and every option of each, and nothing else; its settings table names every
setting with its default, and nothing else; its exit-code table names every exit code."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from worker.cli.main import _IMPLEMENTATIONS
from worker.cli.parser import app
from worker.cli.settings_help import EMPTY, NO_DEFAULT, setting_rows

pytestmark = pytest.mark.unit

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
FILTER = "[FILTER]..."


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def table_rows(text: str) -> Iterator[list[str]]:
    """The cells of each body row of the Markdown tables in ``text``."""
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[-| ]+\|", line):
            yield [cell.strip() for cell in line.strip("|").split("|")]


def readme_commands() -> dict[str, str]:
    """Command name (``dlq list``) -> its synopsis in the README table."""
    commands: dict[str, str] = {}
    for cells in table_rows(section("Commands")):
        synopsis = cells[0].strip("`")
        if synopsis == "command":
            continue
        words = []
        for word in synopsis.split():
            if not re.fullmatch(r"[a-z]+", word):
                break
            words.append(word)
        commands[" ".join(words)] = synopsis
    return commands


def cli_commands() -> dict[str, list[str]]:
    """Command name -> its long options (but ``--help``), from the Typer application."""
    found: dict[str, list[str]] = {}

    def walk(command: Any, name: str) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for sub_name, sub in subcommands.items():
                walk(sub, f"{name} {sub_name}".strip())
            return
        found[name] = [option for param in command.params for option in param.opts
                       if option.startswith("--") and option != "--help"]

    walk(typer.main.get_command(app), "")
    return found


def test_the_command_table_names_every_command_and_only_those() -> None:
    assert sorted(readme_commands()) == sorted(cli_commands())
    assert sorted(cli_commands()) == sorted(_IMPLEMENTATIONS)


def test_each_command_row_names_every_option_of_the_command() -> None:
    filters = README[README.index("`FILTER` picks dead letters"):]
    filters = filters[:filters.index("\n\n")]
    synopses = readme_commands()
    for command, options in cli_commands().items():
        synopsis = synopses[command]
        for option in options:
            in_row = re.search(rf"{re.escape(option)}\b", synopsis) is not None
            in_filter = FILTER in synopsis and f"`{option} " in filters
            assert in_row or in_filter, f"README: {command} does not show {option}"
        assert FILTER not in synopsis or "--reason" in options


def test_the_settings_table_names_every_setting_with_its_default() -> None:
    readme = {cells[0].strip("`"): cells[1] for cells in table_rows(section("Configuration"))
              if cells[0].startswith("`MEERKAT_")}
    rows = setting_rows()
    assert sorted(readme) == sorted(row.variable for row in rows)
    for row in rows:
        cell = readme[row.variable]
        if row.default in (NO_DEFAULT, EMPTY):
            assert cell == row.default, row.variable
        else:
            assert cell.startswith(f"`{row.default}`"), (row.variable, cell, row.default)


def test_the_exit_code_table_names_every_exit_code_and_only_those() -> None:
    from worker.cli import common

    codes = {value for name, value in vars(common).items()
             if name.startswith("EXIT_") and isinstance(value, int)}
    # A second SIGINT or SIGTERM during the drain exits with 128 + the signal's number.
    forced = {128 + signal.SIGINT, 128 + signal.SIGTERM}
    documented: set[int] = set()
    for cells in table_rows(section("Exit codes")):
        if cells[0] == "code":
            continue
        documented |= {int(code) for code in re.findall(r"`(\d+)`", cells[0])}
    assert documented == codes | forced
