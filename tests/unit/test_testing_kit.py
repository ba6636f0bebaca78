"""The test kit's parts that need no service: where services come from, URLs, settings."""

from __future__ import annotations

import pytest

from worker.testing.isolation import Deployment
from worker.testing.services import (
    AMQP_URL_VARIABLE,
    BLOB_URL_VARIABLE,
    IN_PROCESS,
    POSTGRES_URL_VARIABLE,
    S3,
    PostgreSQL,
    RabbitMQ,
    Services,
    masked,
    open_postgresql,
    open_rabbitmq,
    planned_sources,
    s3_from_url,
)
from worker.topology import Topology

pytestmark = pytest.mark.unit


def services() -> Services:
    return Services(
        RabbitMQ("amqp://guest:guest@127.0.0.1:5672/", "machine"),
        PostgreSQL("postgresql+asyncpg://postgres@127.0.0.1:5432/postgres", "machine"),
        S3("127.0.0.1:9000", "key", "se/cret+1", IN_PROCESS),
    )


def test_urls_in_the_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AMQP_URL_VARIABLE, "amqp://u:p@broker:5672/")
    monkeypatch.setenv(POSTGRES_URL_VARIABLE, "postgresql://u:p@db:5432/postgres")
    monkeypatch.setenv(BLOB_URL_VARIABLE, "s3://a:b@s3:9000/any?secure=false")
    assert planned_sources() == {"rabbitmq": "environment", "postgresql": "environment",
                                 "s3": "environment"}
    with open_rabbitmq() as rabbitmq, open_postgresql() as postgresql:
        assert rabbitmq == RabbitMQ("amqp://u:p@broker:5672/", "environment")
        assert postgresql == PostgreSQL("postgresql://u:p@db:5432/postgres", "environment")


def test_an_s3_url_names_the_server_and_each_bucket_gets_its_own_url() -> None:
    server = s3_from_url("s3://ac%2Fcess:se%40cret@minio.test:9000/ignored?secure=false"
                         "&region=eu-1")
    assert (server.endpoint, server.access_key, server.secret_key) == (
        "minio.test:9000", "ac/cess", "se@cret")
    assert server.secure is False
    assert server.url("b-1") == ("s3://ac%2Fcess:se%40cret@minio.test:9000/b-1"
                                 "?secure=false&region=eu-1")
    assert s3_from_url("s3://a:b@host:443/x").secure is True
    with pytest.raises(ValueError, match=BLOB_URL_VARIABLE):
        s3_from_url("http://host/x")


def test_passwords_are_masked_in_what_is_reported() -> None:
    assert masked("amqp://guest:guest@host:5672/") == "amqp://guest:***@host:5672/"
    assert masked("postgresql://postgres@host/db") == "postgresql://postgres@host/db"
    described = services().describe()
    assert "guest:***@" in described
    assert "se/cret" not in described
    assert services().sources == {"rabbitmq": "machine", "postgresql": "machine",
                                  "s3": IN_PROCESS}


def test_a_deployment_gives_settings_of_its_own() -> None:
    deployment = Deployment(services(), "t0123456789", "postgresql+asyncpg://x@h/db_1", "bkt")
    settings = deployment.settings(shards=2, executor="pkg.mod:execute",
                                   database_url="postgresql+asyncpg://x@h/other")
    assert settings.topology_prefix == "t0123456789"
    assert settings.shards == 2
    assert settings.executor == "pkg.mod:execute"
    assert settings.http_port == 0
    assert settings.database_url.get_secret_value() == "postgresql+asyncpg://x@h/other"
    assert settings.blob_url.get_secret_value() == (
        "s3://key:se%2Fcret%2B1@127.0.0.1:9000/bkt?secure=false")
    topology = deployment.topology(settings)
    assert topology == Topology(shards=2, delivery_limit=settings.broker_delivery_limit,
                                prefix="t0123456789",
                                dead_letter_max_length=settings.dead_letter_max_length)
    assert deployment.topologies == {topology}
