"""Several broker addresses in ``MEERKAT_AMQP_URL``: parsed, checked and masked each, tried in
order, and the next connection starting after the address used last."""

from __future__ import annotations

import socket

import pytest
from pydantic import SecretStr, ValidationError

from worker.config import Settings, mask_url
from worker.connect import Addresses, broker_addresses, connect_broker

pytestmark = pytest.mark.unit

CLUSTER = "amqp://u:secret@rabbit-0:5672/,amqp://u:secret@rabbit-1:5672/, amqps://u:secret@rabbit-2/"


def test_the_addresses_are_split_checked_and_masked() -> None:
    assert broker_addresses(CLUSTER) == ["amqp://u:secret@rabbit-0:5672/",
                                         "amqp://u:secret@rabbit-1:5672/",
                                         "amqps://u:secret@rabbit-2/"]
    settings = Settings(_env_file=None, amqp_url=SecretStr(CLUSTER))
    assert "secret" not in str(settings.redacted()["amqp_url"])
    assert mask_url(CLUSTER).count("u:***@") == 3
    with pytest.raises(ValidationError, match="scheme 'http'"):
        Settings(_env_file=None, amqp_url=SecretStr("amqp://a/,http://b/"))


def test_each_connection_starts_after_the_address_used_last() -> None:
    addresses = Addresses("amqp://a/,amqp://b/,amqp://c/")
    assert addresses.in_order() == ["amqp://a/", "amqp://b/", "amqp://c/"]
    addresses.used("amqp://b/")
    assert addresses.in_order() == ["amqp://c/", "amqp://a/", "amqp://b/"]
    addresses.used("amqp://c/")
    assert addresses.in_order() == ["amqp://a/", "amqp://b/", "amqp://c/"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_when_no_address_answers_the_last_failure_is_raised() -> None:
    first, second = _closed_port(), _closed_port()
    with pytest.raises(ConnectionError) as raised:
        await connect_broker(f"amqp://127.0.0.1:{first}/,amqp://127.0.0.1:{second}/", 5)
    assert str(second) in str(raised.value)
