"""Updates of many rows in one statement, for PostgreSQL: ``UPDATE ... FROM (VALUES ...)``.

A commit updates one runtime row (a compare-and-set on its version) and a few input rows per
runtime it touches. Sent one statement per row, a window of a few hundred runtimes costs a few
hundred round trips and as many statements to build; here each table costs one statement. The
``RETURNING`` clause says which rows matched, so the compare-and-set and the "input is stored"
check stay exact: a row that did not match is reported by its key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Table, and_, cast, column, update, values
from sqlalchemy.ext.asyncio import AsyncConnection

EXPECTED = "k_expected_version"


async def update_many(
    conn: AsyncConnection, table: Table, keys: tuple[str, ...], rows: Sequence[dict[str, Any]],
    *, fence_version: bool = False,
) -> set[tuple[Any, ...]]:
    """Update ``rows`` (every column of ``table``; with ``fence_version``, also
    :data:`EXPECTED`, the version each row must have now); returns the keys of the rows that
    matched."""
    names = [c.name for c in table.columns]
    columns = [column(c.name, c.type) for c in table.columns]
    if fence_version:
        columns.append(column(EXPECTED, BigInteger()))
        names.append(EXPECTED)
    given = values(*columns, name="v").data([tuple(row[n] for n in names) for row in rows])
    # VALUES rows carry no column types (a NULL would be text): every use is cast.
    typed = {c.name: cast(given.c[c.name], c.type) for c in table.columns}
    match = [table.c[k] == typed[k] for k in keys]
    if fence_version:
        match.append(table.c.version == cast(given.c[EXPECTED], BigInteger()))
    statement = (
        update(table)
        .where(and_(*match))
        .values({name: value for name, value in typed.items() if name not in keys})
        .returning(*(table.c[k] for k in keys))
    )
    result = await conn.execute(statement)
    return {tuple(row) for row in result}
