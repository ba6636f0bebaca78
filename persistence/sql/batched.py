"""Updates of many rows in one statement, for PostgreSQL: ``UPDATE ... FROM unnest(...)``.

A commit updates one runtime row (a compare-and-set on its version) and a few input rows per
runtime it touches. Sent one statement per row, a window of a few hundred runtimes costs a few
hundred round trips; here each table costs one statement. Each column travels as one array
parameter, so the statement's text depends only on the table: it is built once, and asyncpg
prepares it once per connection (a ``VALUES`` list would make new SQL, compiled anew, for every
commit). The ``RETURNING`` clause says which rows matched, so the compare-and-set and the "input
is stored" check stay exact: a row that did not match is reported by its key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

EXPECTED = "k_expected_version"
"""The extra column of a fenced update: the version each row must have now."""


@dataclass(frozen=True)
class _Statement:
    sql: str
    names: tuple[str, ...]
    """The parameter columns, in order (with :data:`EXPECTED` last when fenced)."""
    processors: tuple[Callable[[Any], Any] | None, ...]
    """Each column type's bind processor (JSON to text, time zones, ...), as SQLAlchemy has."""


_BUILT: dict[tuple[str, tuple[str, ...], bool, str], _Statement] = {}


def _statement(table: Table, keys: tuple[str, ...], fence_version: bool,
               dialect: Dialect) -> _Statement:
    key = (table.name, keys, fence_version, dialect.name)
    built = _BUILT.get(key)
    if built is not None:
        return built
    columns = list(table.columns)
    names = [c.name for c in columns]
    types = [c.type.compile(dialect=dialect) for c in columns]
    processors: list[Callable[[Any], Any] | None] = [
        c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns
    ]
    if fence_version:
        names.append(EXPECTED)
        types.append("BIGINT")
        processors.append(None)
    arrays = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(types, start=1))
    assigned = ", ".join(f"{name} = v.{name}" for name in names
                         if name not in keys and name != EXPECTED)
    match = [f"t.{k} = v.{k}" for k in keys]
    if fence_version:
        match.append(f"t.version = v.{EXPECTED}")
    sql = (
        f"UPDATE {table.name} AS t SET {assigned} "
        f"FROM unnest({arrays}) AS v({', '.join(names)}) "
        f"WHERE {' AND '.join(match)} "
        f"RETURNING {', '.join(f't.{k}' for k in keys)}"
    )
    built = _BUILT[key] = _Statement(sql, tuple(names), tuple(processors))
    return built


async def update_many(
    conn: AsyncConnection, table: Table, keys: tuple[str, ...], rows: Sequence[dict[str, Any]],
    *, fence_version: bool = False,
) -> set[tuple[Any, ...]]:
    """Update ``rows`` (every column of ``table``; with ``fence_version``, also
    :data:`EXPECTED`, the version each row must have now); returns the keys of the rows that
    matched."""
    statement = _statement(table, keys, fence_version, conn.dialect)
    arrays = []
    for name, process in zip(statement.names, statement.processors, strict=True):
        column = [row[name] for row in rows]
        if process is not None:
            column = [None if value is None else process(value) for value in column]
        arrays.append(column)
    result = await conn.exec_driver_sql(statement.sql, tuple(arrays))
    return {tuple(row) for row in result}
