"""Worker settings: environment variables prefixed ``MEERKAT_``, a ``.env`` file, secret files.

Precedence, strongest first: keyword arguments, the process environment, ``MEERKAT_<NAME>_FILE``
secret files, the ``.env`` file, the defaults below.

Secrets (the broker, database, blob store and executor URLs) may be given as
``MEERKAT_<NAME>_FILE=/path``; the file's content, stripped of surrounding whitespace, is the
value. Setting both ``MEERKAT_<NAME>`` and ``MEERKAT_<NAME>_FILE`` (in the environment or the
``.env`` file) is an error rather than a silent choice: an operator who mounted a secret file
must not be overridden by a forgotten variable, nor the other way round.

Secrets are ``SecretStr`` so they never reach logs by accident; ``redacted()`` and ``repr()``
show the URLs with their passwords masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from schemas.validation import Limits, MiB

ENV_PREFIX = "MEERKAT_"
SECRET_FIELDS = ("amqp_url", "database_url", "blob_url", "executor_url")
URL_SCHEMES: Mapping[str, tuple[tuple[str, ...], str]] = {
    "amqp_url": (("amqp", "amqps"), "amqp://USER:PASSWORD@HOST:5672/VHOST"),
    "database_url": (
        ("postgresql", "postgres", "postgresql+asyncpg", "sqlite", "sqlite+aiosqlite", "memory"),
        "postgresql://USER:PASSWORD@HOST:5432/DATABASE or sqlite:///PATH",
    ),
    "blob_url": (("file", "s3", "memory"), "s3://ACCESS:SECRET@HOST:PORT/BUCKET or file:///PATH"),
}
"""The URL settings: the schemes each accepts, and how such a URL is written."""
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
MASK = "***"
_SECRET_QUERY_KEY = re.compile(r"token|secret|password|key|sig", re.IGNORECASE)


class LimitSettings(BaseModel):
    """Size limits on incoming messages (``MEERKAT_LIMITS__MAX_IMAGES=4`` and so on)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_message_bytes: int = Field(8 * MiB, ge=1, description="largest accepted message")
    max_image_bytes: int = Field(5 * MiB, ge=1, description="largest decoded image")
    max_images: int = Field(16, ge=0, description="images per input")
    max_json_depth: int = Field(
        64, ge=2, le=200, description="deepest nesting of arrays and objects in a message"
    )

    def to_limits(self) -> Limits:
        return Limits(
            max_message_bytes=self.max_message_bytes,
            max_image_bytes=self.max_image_bytes,
            max_images=self.max_images,
            max_json_depth=self.max_json_depth,
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        # `.env` files are shared with other tools; their variables are none of our business.
        extra="ignore",
        frozen=True,
    )

    amqp_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@localhost:5672/"), description="broker"
    )
    database_url: SecretStr = Field(
        SecretStr("sqlite+aiosqlite:///./meerkat.db"), description="state store"
    )
    blob_url: SecretStr = Field(SecretStr("file://./blobs"), description="blob store")
    shards: int = Field(16, ge=1, le=99, description="ingress shard queues")
    prefetch: int = Field(256, ge=1, le=65535, description="per-shard consumer prefetch")
    executor: str = Field(
        "worker.runs.executors.echo:execute",
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="import path module:callable of the run executor",
    )
    executor_url: SecretStr | None = Field(None, description="endpoint of the HTTP executor")
    executor_timeout_seconds: float = Field(300.0, gt=0, description="limit on one executor call")
    http_port: int = Field(8080, ge=0, le=65535, description="/healthz, /readyz, /metrics")
    delivery_limit: int = Field(
        5, ge=1, description="failed processing attempts of one message before dead-lettering"
    )
    broker_delivery_limit: int = Field(
        100, ge=1,
        description="x-delivery-limit of the shard queues: a backstop against crash loops",
    )
    stall_seconds: float = Field(
        60.0, gt=0,
        description="liveness fails when deliveries wait and none is settled for this long",
    )
    destroy_unknown_runtimes: bool = Field(
        False, description="let destroy tombstone a runtime id that was never used"
    )
    fault: str | None = Field(
        None, description="crash-consistency fault points, e.g. after_commit_before_ack:37"
    )
    log_format: Literal["json", "console"] = Field("json", description="json or console")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="lowest level logged (the worker's events and its libraries')"
    )
    shutdown_grace_seconds: float = Field(30.0, gt=0, description="drain time after SIGTERM")
    connect_timeout_seconds: float = Field(
        30.0, gt=0,
        description="limit on reaching the broker, the database and the blob store at start-up",
    )
    group_commit_window_ms: float = Field(5.0, ge=0, description="how long a commit batch fills")
    max_concurrent_runs: int = Field(
        256, ge=1, description="executor calls at once (runs of different runtimes)"
    )
    commits_in_flight: int = Field(
        2, ge=1, le=16, description="group commits under way at once (windows pipelined)"
    )
    max_cached_runtimes: int = Field(
        10_000, ge=1, description="runtimes kept in memory; idle ones past this are reloaded"
    )
    limits: LimitSettings = Field(default_factory=LimitSettings)
    topology_prefix: str = Field(
        "meerkat",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="first part of every exchange and queue name (to share one vhost)",
    )
    command_users: dict[str, list[str]] = Field(
        default_factory=dict,
        description="JSON object: command type (or *) to the broker users allowed to send it",
    )
    reply_queue_prefix: str = Field(
        "", max_length=200,
        description="replies also go to queues named with this prefix (besides direct reply-to)",
    )
    membership: bool = Field(
        True, description="spread the shard queues over the live workers (heartbeat rows)"
    )
    heartbeat_seconds: float = Field(
        1.0, gt=0, description="membership heartbeat interval; a worker silent for 3 is gone"
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="auto (uvloop when installed), uvloop or asyncio"
    )
    events: str = Field(
        "*", description="event codes written to the outbox and published: codes or patterns, "
        "comma-separated (run.*,input.consumed); input.rejected and command.rejected always"
    )
    outbox_retention_seconds: float = Field(
        3600.0, gt=0, description="sent outbox events older than this are deleted"
    )
    dedupe_window_seconds: float = Field(
        7 * 86400.0, gt=0,
        description="terminal inputs, their receipts and processed commands are kept (and "
        "a redelivered id or idempotency key recognised) for this long, then pruned",
    )
    retention_interval_seconds: float = Field(
        60.0, gt=0, description="how often the pruner runs (and the dead queue is measured)"
    )
    dead_letter_max_length: int = Field(
        100_000, ge=1,
        description="x-max-length of the dead queue; past it the oldest dead letters are dropped",
    )
    outbox_relay: Literal["auto", "process", "inline"] = Field(
        "inline",
        description="where the outbox relay runs: the worker's event loop (inline), a child "
        "process of its own (process), or auto: process on PostgreSQL, inline otherwise",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        scopes = [s.env_vars for s in (env_settings, dotenv_settings)
                  if isinstance(s, EnvSettingsSource)]
        secret_files = SecretFileSource(settings_cls, scopes)
        return init_settings, env_settings, secret_files, dotenv_settings

    @field_validator("amqp_url", "database_url", "blob_url")
    @classmethod
    def _scheme_is_known(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        # A URL the worker cannot use must stop it here (exit code 2), not at the first
        # connection attempt. Only the scheme is ever repeated: the rest may hold a secret.
        assert info.field_name is not None
        schemes, example = URL_SCHEMES[info.field_name]
        # The broker may be several nodes of a cluster, comma-separated (worker.connect).
        raw = value.get_secret_value()
        urls = raw.split(",") if info.field_name == "amqp_url" else [raw]
        for url in urls:
            scheme, separator, _ = url.strip().partition("://")
            if not separator or not _SCHEME.fullmatch(scheme):
                raise ValueError(f"not a URL of the form {example}")
            if scheme.lower() not in schemes:
                raise ValueError(f"the scheme {scheme!r} is not one of {', '.join(schemes)}; "
                                 f"write it as {example}")
        return value

    @model_validator(mode="after")
    def _relay_process_needs_a_shared_database(self) -> Settings:
        if self.outbox_relay == "process" and not _is_postgresql(self.database_url):
            raise ValueError("MEERKAT_OUTBOX_RELAY=process needs a PostgreSQL database: a "
                             "SQLite file or memory:// store is owned by one process")
        return self

    @property
    def relay_runs_apart(self) -> bool:
        """Whether the outbox relay runs in a child process of its own (see ``outbox_relay``)."""
        if self.outbox_relay == "auto":
            return _is_postgresql(self.database_url)
        return self.outbox_relay == "process"

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("fault")
    @classmethod
    def _fault_plan_parses(cls, value: str | None) -> str | None:
        from worker.faults import FaultPlan  # a bad plan is a configuration error (exit 2)

        FaultPlan.parse(value)
        return value

    @field_validator("event_loop")
    @classmethod
    def _uvloop_is_there(cls, value: str) -> str:
        from worker.event_loop import uvloop_installed

        if value == "uvloop" and not uvloop_installed():
            raise ValueError("uvloop is not installed (pip install uvloop, or choose auto)")
        return value

    @field_validator("events")
    @classmethod
    def _event_selection_parses(cls, value: str) -> str:
        from worker.event_selection import EventSelection  # an unknown code is a config error

        EventSelection.parse(value)
        return value

    @field_validator("command_users")
    @classmethod
    def _command_types_are_known(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        from worker.pipeline.authz import command_users  # an unknown type is a config error

        command_users(value)
        return value

    def redacted(self) -> dict[str, Any]:
        """All settings, safe to log: secrets shown as URLs with the password masked."""
        values = self.model_dump()
        for name in SECRET_FIELDS:
            secret = getattr(self, name)
            values[name] = None if secret is None else mask_url(secret.get_secret_value())
        return values

    def scrub(self, text: str) -> str:
        """The text with every configured secret URL masked, whatever library wrote it."""
        for name in SECRET_FIELDS:
            secret: SecretStr | None = getattr(self, name)
            if secret is not None:
                raw = secret.get_secret_value()
                text = text.replace(raw, mask_url(raw))
        return text

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Both repr() and str() go through here, so neither can leak a secret.
        yield from self.redacted().items()


class SecretFileSource(PydanticBaseSettingsSource):
    """Reads ``MEERKAT_<NAME>_FILE`` for the secret fields from the environment or ``.env``."""

    def __init__(
        self, settings_cls: type[BaseSettings], scopes: list[Mapping[str, str | None]]
    ) -> None:
        super().__init__(settings_cls)
        # Keys of the env sources are lower-cased: the settings are case-insensitive.
        self._scopes = scopes

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in SECRET_FIELDS:
            plain = f"{ENV_PREFIX}{name}".lower()
            pointer = f"{plain}_file"
            path = next((s[pointer] for s in self._scopes if s.get(pointer)), None)
            if path is None:
                continue
            if any(s.get(plain) for s in self._scopes):
                raise SettingsError(
                    f"set either {plain.upper()} or {pointer.upper()}, not both"
                )
            values[name] = read_secret_file(pointer.upper(), Path(path))
        return values


def read_secret_file(variable: str, path: Path) -> str:
    try:
        content = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    if not content:
        raise SettingsError(f"{variable}: {path} is empty")
    return content


def mask_url(url: str) -> str:
    """The URL with its credentials masked: the password (or a lone user token) and the values
    of query parameters that look like keys or tokens. Several comma-separated URLs (a broker
    cluster) are masked each."""
    parts = url.split(",")
    if len(parts) > 1 and all("://" in part for part in parts):
        return ",".join(_mask_one(part) for part in parts)
    return _mask_one(url)


def _mask_one(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{hostinfo}" if password is not None else f"{MASK}@{hostinfo}"
    query = "&".join(
        f"{key}={MASK}" if _SECRET_QUERY_KEY.search(key) else f"{key}={value}" if sep else key
        for key, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    if (netloc, query) == (parts.netloc, parts.query):
        # urlunsplit would turn "sqlite:///x" into "sqlite:/x".
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _is_postgresql(url: SecretStr) -> bool:
    return url.get_secret_value().lower().startswith(("postgresql", "postgres:"))


def load_settings() -> Settings:
    """The settings of this process (raises ``ValidationError`` / ``SettingsError``)."""
    return Settings()
