"""The settings as ``run --help`` lists them, generated from the settings model so that the list
cannot drift from what the worker reads.

Each field of :class:`worker.config.Settings` is one row: its environment variable, its default
and its description; a nested model (``limits``) gives one row per field of its own, named with
the ``__`` delimiter (``MEERKAT_LIMITS__MAX_IMAGES``). Defaults are written as one would set
them: ``true``/``false``, whole numbers without ``.0``, ``{}`` for an empty mapping, ``empty``
for an empty string and ``—`` for none. The README's settings table is checked against the same
rows (``tests/unit/test_cli_docs.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

from worker.config import ENV_PREFIX, SECRET_FIELDS, Settings

if TYPE_CHECKING:
    from rich.console import RenderableType

NO_DEFAULT = "—"
EMPTY = "empty"


@dataclass(frozen=True)
class SettingRow:
    variable: str
    default: str
    meaning: str


def setting_rows(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> list[SettingRow]:
    """One row per setting, in the order the model declares them."""
    return list(_rows(model, prefix))


def _rows(model: type[BaseModel], prefix: str) -> Iterator[SettingRow]:
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            yield from _rows(type(default), f"{variable}__")
            continue
        meaning = field.description or ""
        if model is Settings and name in SECRET_FIELDS:
            meaning += " (secret)"
        yield SettingRow(variable, format_default(default), meaning)


def format_default(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return NO_DEFAULT
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value)
    if value == "":
        return EMPTY
    return str(value)


def settings_panel() -> RenderableType:
    """The rows as a panel of the help screen."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for row in setting_rows():
        line = Text(row.default, style="green")
        if row.meaning:
            line.append(f"  {row.meaning}", style="default")
        table.add_row(row.variable, line)
    title = f"Settings: {ENV_PREFIX}* variable, default, meaning"
    return Panel(table, title=title, title_align="left", border_style="dim")
