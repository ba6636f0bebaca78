"""``sslmode=`` in a PostgreSQL URL works as operators write it for libpq: it reaches asyncpg as
its ``ssl`` argument instead of failing every connection with a TypeError."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from persistence.errors import StoreUnavailable
from persistence.factory import open_runtime_store
from persistence.sql.engine import ssl_mode

pytestmark = pytest.mark.integration


def with_sslmode(url: str, mode: str) -> str:
    return make_url(url).update_query_dict({"sslmode": mode}).render_as_string(
        hide_password=False
    )


async def test_sslmode_disable_connects(postgres_url: str) -> None:
    store = await open_runtime_store(with_sslmode(postgres_url, "disable"))
    try:
        await store.ping()
    finally:
        await store.close()


async def test_sslmode_require_against_a_server_without_tls_is_a_clear_outage(
    postgres_url: str,
) -> None:
    """The machine's own PostgreSQL has no TLS: requiring it must fail as a dependency that
    cannot be reached (exit code 3 in the CLI), naming the refused upgrade."""
    with pytest.raises(StoreUnavailable, match="SSL"):
        await open_runtime_store(with_sslmode(postgres_url, "require"))


def test_an_unknown_sslmode_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="sslmode must be one of"):
        ssl_mode(make_url("postgresql+asyncpg://u@h/db?sslmode=sometimes"))
    assert ssl_mode(make_url("postgresql+asyncpg://u@h/db?sslmode=verify-full")) == "verify-full"
    assert ssl_mode(make_url("postgresql+asyncpg://u@h/db")) is None
