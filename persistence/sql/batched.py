"""Statements of many rows in one, for PostgreSQL: each column travels as one array parameter.

A commit writes a few hundred rows to each of a few tables. Sent as one statement per row, or as
a ``VALUES`` list whose text grows with the row count, each would be built, compiled or parsed
anew; here each statement reads its rows from ``unnest($1::type[], $2::type[], ...)``, so its
text depends only on the table and is built once, at import, and asyncpg prepares it once per
connection. Each function returns the SQL text; :mod:`persistence.sql.driver_writes` binds the
columns (in the order of ``columns``) and runs it.

String columns travel as ``text[]``, not as their ``varchar(n)[]``: an explicit cast to
``varchar(n)`` would cut a longer value short, where the assignment into the column refuses it,
as a plain ``INSERT`` does. JSON columns travel as ``text[]`` too, JSON text cast to ``json``
by the statement: asyncpg writes text arrays itself, whatever codec the connection has for
``json``. ``RETURNING`` says which rows were written or matched, so that a
compare-and-set, an "is stored" check or a conflict left alone is reported by its key.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, String, Table
from sqlalchemy.dialects import postgresql

EXPECTED = "k_expected_version"
"""The extra column of a fenced update: the version each row must have now."""

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _array_type(column: Column[object]) -> str:
    if isinstance(column.type, String | JSON):
        return "text[]"
    return f"{column.type.compile(dialect=_DIALECT)}[]"


def _value(table: Table, name: str) -> str:
    """Column ``name`` of the unnested row ``v``, as the column's type."""
    return f"v.{name}::json" if isinstance(table.c[name].type, JSON) else f"v.{name}"


def _unnest(table: Table, columns: tuple[str, ...], extra: tuple[tuple[str, str], ...] = ()
            ) -> str:
    kinds = [_array_type(table.c[name]) for name in columns] + [kind for _, kind in extra]
    arrays = ", ".join(f"${n}::{kind}" for n, kind in enumerate(kinds, start=1))
    return f"unnest({arrays})"


def insert_from_arrays(
    table: Table, columns: tuple[str, ...], *, conflict: str = "", returning: tuple[str, ...] = (),
    ordered: bool = False,
) -> str:
    """``INSERT INTO table (columns) SELECT ... FROM unnest(...)``; ``conflict`` is an
    ``ON CONFLICT`` clause; ``ordered``: the rows are inserted (and their defaults, a serial
    position, taken) in the order of the arrays."""
    names = ", ".join(columns)
    values = ", ".join(_value(table, name) for name in columns)
    source = _unnest(table, columns)
    if ordered:
        select = (f"SELECT {values} FROM {source} WITH ORDINALITY AS v({names}, ord) "
                  "ORDER BY ord")
    else:
        select = f"SELECT {values} FROM {source} AS v({names})"
    sql = f"INSERT INTO {table.name} ({names}) {select}"
    if conflict:
        sql += f" {conflict}"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    return sql


def upsert_clause(table: Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> str:
    """``ON CONFLICT (keys) DO UPDATE`` every other column to the new row's value."""
    changed = ", ".join(f"{name} = EXCLUDED.{name}" for name in columns if name not in keys)
    return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {changed}"


def update_from_arrays(
    table: Table, keys: tuple[str, ...], columns: tuple[str, ...], *, fence_version: bool = False,
) -> str:
    """``UPDATE table SET <columns but keys> FROM unnest(...) WHERE <keys match>
    RETURNING <keys>``; with ``fence_version`` the arrays end with :data:`EXPECTED`, the
    version each row must have now."""
    extra = ((EXPECTED, "BIGINT[]"),) if fence_version else ()
    names = (*columns, *(name for name, _ in extra))
    assigned = ", ".join(f"{name} = {_value(table, name)}" for name in columns
                         if name not in keys)
    match = [f"t.{k} = v.{k}" for k in keys]
    if fence_version:
        match.append(f"t.version = v.{EXPECTED}")
    return (
        f"UPDATE {table.name} AS t SET {assigned} "
        f"FROM {_unnest(table, columns, extra)} AS v({', '.join(names)}) "
        f"WHERE {' AND '.join(match)} "
        f"RETURNING {', '.join(f't.{k}' for k in keys)}"
    )


def delete_from_arrays(table: Table, keys: tuple[str, ...]) -> str:
    """``DELETE FROM table`` the rows whose keys are given."""
    match = " AND ".join(f"t.{k} = v.{k}" for k in keys)
    return (f"DELETE FROM {table.name} AS t USING {_unnest(table, keys)} "
            f"AS v({', '.join(keys)}) WHERE {match}")
