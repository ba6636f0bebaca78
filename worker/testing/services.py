"""The services a test session runs against: RabbitMQ, PostgreSQL and S3, each found once.

Each service is chosen on its own, first of:

1. ``environment``: a URL in the environment names it (:data:`AMQP_URL_VARIABLE`,
   :data:`POSTGRES_URL_VARIABLE`, :data:`BLOB_URL_VARIABLE`). An explicit setting wins even
   where Docker runs, so a CI job with services of its own uses them.
2. ``container``: a Docker daemon answers; testcontainers starts RabbitMQ (the consistent-hash
   exchange plugin enabled), PostgreSQL or MinIO, stopped when the session ends.
3. ``machine`` / ``in-process``: the machine's own RabbitMQ (``127.0.0.1:5672``, guest/guest)
   and PostgreSQL (``127.0.0.1:5432``, user ``postgres``), and an in-process moto S3 server on
   ``127.0.0.1`` and a free port.

testcontainers raises already in a container's constructor when no daemon runs, and the
fallback must then be silent, so every container is started through :func:`start_container`,
which gives None for "not here". Nothing here creates a database, a bucket or a topology: that
is per test (:mod:`worker.testing.isolation`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from yarl import URL

from worker.topology import PLUGIN

AMQP_URL_VARIABLE = "MEERKAT_TEST_AMQP_URL"
"""A broker to use (the consistent-hash exchange plugin enabled); tests make names of their own."""
POSTGRES_URL_VARIABLE = "MEERKAT_TEST_POSTGRES_URL"
"""A database on a PostgreSQL server whose role may create databases (one is made per test)."""
BLOB_URL_VARIABLE = "MEERKAT_TEST_BLOB_URL"
"""``s3://ACCESS:SECRET@HOST:PORT/ANY?secure=false``: an S3 server (a bucket is made per test)."""

LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
RABBITMQ_IMAGE = "rabbitmq:3.10"
POSTGRES_IMAGE = "postgres:16-alpine"
AMQP_PORT = 5672
DOCKER_SOCKET = "/var/run/docker.sock"

# moto accepts any credentials; these carry characters that must be percent-encoded in a URL.
MOTO_ACCESS_KEY = "meerkat-test"
MOTO_SECRET_KEY = "meerkat/test+secret@1"

ENVIRONMENT, CONTAINER, MACHINE, IN_PROCESS = "environment", "container", "machine", "in-process"


@dataclass(frozen=True)
class RabbitMQ:
    url: str
    source: str


@dataclass(frozen=True)
class PostgreSQL:
    url: str
    """The server's maintenance database, where test databases are created."""
    source: str


@dataclass(frozen=True)
class S3:
    endpoint: str
    """``host:port``."""
    access_key: str
    secret_key: str
    source: str
    secure: bool = False
    options: tuple[tuple[str, str], ...] = ()
    """Further ``MEERKAT_BLOB_URL`` options (``region``, ``ca_file``)."""

    @property
    def kind(self) -> str:
        """``moto`` for the in-process server, else ``s3``."""
        return "moto" if self.source == IN_PROCESS else "s3"

    def url(self, bucket: str) -> str:
        """The ``MEERKAT_BLOB_URL`` of a bucket on this server."""
        user = quote(self.access_key, safe="")
        secret = quote(self.secret_key, safe="")
        query = urlencode([("secure", "true" if self.secure else "false"), *self.options])
        return f"s3://{user}:{secret}@{self.endpoint}/{bucket}?{query}"


@dataclass(frozen=True)
class Services:
    """The three services of a session, and where each came from."""

    rabbitmq: RabbitMQ
    postgresql: PostgreSQL
    s3: S3

    @property
    def sources(self) -> dict[str, str]:
        """``{"rabbitmq": "container", "postgresql": "machine", "s3": "in-process"}``, say."""
        return {"rabbitmq": self.rabbitmq.source, "postgresql": self.postgresql.source,
                "s3": self.s3.source}

    def describe(self) -> str:
        """One line naming each service and its source, passwords masked."""
        return (f"rabbitmq={self.rabbitmq.source} ({masked(self.rabbitmq.url)}), "
                f"postgresql={self.postgresql.source} ({masked(self.postgresql.url)}), "
                f"s3={self.s3.source} ({self.s3.endpoint})")


def masked(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url


# --- finding each service ---------------------------------------------------------------------


def docker_answers() -> bool:
    """Whether a Docker daemon is reachable (the SDK is imported by name: a folder called
    ``docker`` in a project would shadow it for the type checker)."""
    if not os.environ.get("DOCKER_HOST") and not Path(DOCKER_SOCKET).exists():
        # Probing an absent socket through the SDK leaks that socket (a ResourceWarning).
        return False
    try:
        docker: Any = importlib.import_module("docker")
    except ImportError:
        return False
    client: Any = None
    try:
        client = docker.from_env()
        client.ping()
    except Exception:
        # Usually docker.errors.DockerException (no daemon); a socket that answers something
        # other than Docker must not break the session either.
        return False
    finally:
        if client is not None:
            client.close()
    return True


def start_container(build: Callable[[], Any],
                    ready: Callable[[Any], None] = lambda _: None) -> Any | None:
    """A started container from ``build()`` once ``ready(container)`` returned, or None when
    Docker is not usable or anything about the container failed (the caller falls back)."""
    if not docker_answers():
        return None
    container: Any = None
    try:
        container = build()
        container.start()
        ready(container)
    except Exception:
        if container is not None:
            with contextlib.suppress(Exception):
                container.stop()
        return None
    return container


@contextlib.contextmanager
def _stopping(container: Any) -> Iterator[None]:
    try:
        yield
    finally:
        container.stop()


@contextlib.contextmanager
def open_rabbitmq() -> Iterator[RabbitMQ]:
    """The session's broker (see the module docstring for the order)."""
    configured = os.environ.get(AMQP_URL_VARIABLE)
    if configured:
        yield RabbitMQ(configured, ENVIRONMENT)
        return

    def build() -> Any:
        from testcontainers.core.container import DockerContainer

        return DockerContainer(RABBITMQ_IMAGE).with_exposed_ports(AMQP_PORT)

    def ready(container: Any) -> None:
        from testcontainers.core.waiting_utils import wait_for_logs

        wait_for_logs(container, "Server startup complete", timeout=120)
        code, output = container.exec(["rabbitmq-plugins", "enable", PLUGIN])
        if code != 0:
            raise RuntimeError(f"rabbitmq-plugins enable {PLUGIN} failed: {output!r}")

    container = start_container(build, ready)
    if container is None:
        yield RabbitMQ(LOCAL_AMQP_URL, MACHINE)
        return
    with _stopping(container):
        host = container.get_container_host_ip()
        port = container.get_exposed_port(AMQP_PORT)
        yield RabbitMQ(f"amqp://guest:guest@{host}:{port}/", CONTAINER)


@contextlib.contextmanager
def open_postgresql() -> Iterator[PostgreSQL]:
    """The session's PostgreSQL server (see the module docstring for the order)."""
    configured = os.environ.get(POSTGRES_URL_VARIABLE)
    if configured:
        yield PostgreSQL(configured, ENVIRONMENT)
        return

    def build() -> Any:
        from testcontainers.community.postgres import PostgresContainer

        return PostgresContainer(POSTGRES_IMAGE, driver="asyncpg")

    container = start_container(build)
    if container is None:
        yield PostgreSQL(LOCAL_POSTGRES_URL, MACHINE)
        return
    with _stopping(container):
        yield PostgreSQL(container.get_connection_url(), CONTAINER)


@contextlib.contextmanager
def open_s3() -> Iterator[S3]:
    """The session's S3 server (see the module docstring for the order)."""
    configured = os.environ.get(BLOB_URL_VARIABLE)
    if configured:
        yield s3_from_url(configured)
        return

    def build() -> Any:
        from testcontainers.community.minio import MinioContainer

        return MinioContainer()

    container = start_container(build)
    if container is not None:
        with _stopping(container):
            config = container.get_config()
            yield S3(config["endpoint"], config["access_key"], config["secret_key"], CONTAINER)
        return
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        yield S3(f"{host}:{port}", MOTO_ACCESS_KEY, MOTO_SECRET_KEY, IN_PROCESS)
    finally:
        moto.stop()


def s3_from_url(url: str) -> S3:
    """The server a ``MEERKAT_BLOB_URL``-style ``s3://`` URL names (its bucket is ignored)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.hostname:
        raise ValueError(f"{BLOB_URL_VARIABLE} must be an s3://ACCESS:SECRET@HOST:PORT/ URL")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    secure = options.pop("secure", "true").strip().lower() in ("1", "true", "yes", "on")
    endpoint = parts.netloc.rpartition("@")[2]
    return S3(endpoint, unquote(parts.username or ""), unquote(parts.password or ""),
              ENVIRONMENT, secure=secure, options=tuple(sorted(options.items())))


def planned_sources() -> dict[str, str]:
    """What each service would come from, without starting anything (for the report header):
    ``environment``, ``container`` (Docker answers) or the machine's own."""
    docker = docker_answers()

    def pick(variable: str, fallback: str) -> str:
        if os.environ.get(variable):
            return ENVIRONMENT
        return CONTAINER if docker else fallback

    return {"rabbitmq": pick(AMQP_URL_VARIABLE, MACHINE),
            "postgresql": pick(POSTGRES_URL_VARIABLE, MACHINE),
            "s3": pick(BLOB_URL_VARIABLE, IN_PROCESS)}
