"""Settings: the defaults of CONTRACT.md, environment overrides, secret files, redaction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from schemas.validation import DEFAULT_LIMITS
from worker.config import Settings, load_settings, mask_url

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MEERKAT_* variable of the calling shell and no stray ``.env`` may leak in."""
    for name in list(os.environ):
        if name.upper().startswith("MEERKAT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_match_the_contract() -> None:
    settings = Settings(_env_file=None)

    assert settings.amqp_url.get_secret_value() == "amqp://guest:guest@localhost:5672/"
    assert settings.database_url.get_secret_value() == "sqlite+aiosqlite:///./meerkat.db"
    assert settings.blob_url.get_secret_value() == "file://./blobs"
    assert settings.shards == 16
    assert settings.prefetch == 256
    assert settings.executor == "worker.runs.executors.echo:execute"
    assert settings.executor_url is None
    assert settings.executor_timeout_seconds == 300
    assert settings.http_port == 8080
    assert settings.delivery_limit == 5
    assert settings.log_format == "json"
    assert settings.shutdown_grace_seconds == 30
    assert settings.connect_timeout_seconds == 30
    assert settings.group_commit_window_ms == 5
    assert settings.max_concurrent_runs == 256
    assert settings.limits.to_limits() == DEFAULT_LIMITS
    assert settings.topology_prefix == "meerkat"
    assert settings.membership is True
    assert settings.heartbeat_seconds == 1
    assert settings.max_cached_runtimes == 10_000


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEERKAT_SHARDS", "4")
    monkeypatch.setenv("MEERKAT_LOG_FORMAT", "console")
    monkeypatch.setenv("MEERKAT_DATABASE_URL", "postgresql+asyncpg://meerkat:pw@db:5432/meerkat")
    monkeypatch.setenv("MEERKAT_LIMITS__MAX_IMAGES", "2")
    monkeypatch.setenv("MEERKAT_TOPOLOGY_PREFIX", "staging")
    monkeypatch.setenv("MEERKAT_MEMBERSHIP", "false")
    monkeypatch.setenv("MEERKAT_MAX_CACHED_RUNTIMES", "50")

    settings = load_settings()

    assert settings.topology_prefix == "staging"
    assert settings.membership is False
    assert settings.max_cached_runtimes == 50

    assert settings.shards == 4
    assert settings.log_format == "console"
    assert settings.database_url.get_secret_value().startswith("postgresql+asyncpg://")
    assert settings.limits.max_images == 2
    assert settings.limits.max_image_bytes == DEFAULT_LIMITS.max_image_bytes


def test_dotenv_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("MEERKAT_PREFETCH=32\nMEERKAT_HTTP_PORT=9000\nOTHER_TOOL=x\n")
    monkeypatch.setenv("MEERKAT_HTTP_PORT", "9100")

    settings = load_settings()

    assert settings.prefetch == 32
    assert settings.http_port == 9100


@pytest.mark.parametrize(
    ("name", "value"),
    [("MEERKAT_SHARDS", "0"), ("MEERKAT_SHARDS", "100"), ("MEERKAT_LOG_FORMAT", "xml"),
     ("MEERKAT_EXECUTOR", "no-colon"), ("MEERKAT_PREFETCH", "0")],
)
def test_out_of_range_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError):
        load_settings()


def test_secret_comes_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "database-url"
    secret.write_text("postgresql+asyncpg://meerkat:from-file@db/meerkat\n")
    monkeypatch.setenv("MEERKAT_DATABASE_URL_FILE", str(secret))

    settings = load_settings()

    assert settings.database_url.get_secret_value() == (
        "postgresql+asyncpg://meerkat:from-file@db/meerkat"
    )


def test_secret_file_named_in_dotenv(tmp_path: Path) -> None:
    secret = tmp_path / "amqp-url"
    secret.write_text("amqp://svc:s3cret@broker:5672/\n")
    Path(".env").write_text(f"MEERKAT_AMQP_URL_FILE={secret}\n")

    assert load_settings().amqp_url.get_secret_value() == "amqp://svc:s3cret@broker:5672/"


def test_secret_and_secret_file_together_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "blob-url"
    secret.write_text("s3://ak:sk@minio:9000/bucket")
    monkeypatch.setenv("MEERKAT_BLOB_URL_FILE", str(secret))
    monkeypatch.setenv("MEERKAT_BLOB_URL", "file://./elsewhere")

    with pytest.raises(SettingsError, match="not both"):
        load_settings()


def test_unreadable_secret_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEERKAT_EXECUTOR_URL_FILE", str(tmp_path / "missing"))

    with pytest.raises(SettingsError, match="MEERKAT_EXECUTOR_URL_FILE"):
        load_settings()


def test_repr_and_redacted_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEERKAT_AMQP_URL", "amqp://svc:amqp-pw@broker:5672/")
    monkeypatch.setenv("MEERKAT_DATABASE_URL", "postgresql+asyncpg://meerkat:db-pw@db/meerkat")
    monkeypatch.setenv("MEERKAT_BLOB_URL", "s3://access:blob-pw@minio:9000/b?secure=false")
    monkeypatch.setenv("MEERKAT_EXECUTOR_URL", "https://exec.example/run?token=exec-pw")

    settings = load_settings()
    shown = [repr(settings), str(settings), str(settings.redacted())]

    for text in shown:
        for password in ("amqp-pw", "db-pw", "blob-pw", "exec-pw"):
            assert password not in text
    assert settings.redacted()["database_url"] == "postgresql+asyncpg://meerkat:***@db/meerkat"
    assert settings.redacted()["blob_url"] == "s3://access:***@minio:9000/b?secure=false"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite+aiosqlite:///./meerkat.db", "sqlite+aiosqlite:///./meerkat.db"),
        ("file://./blobs", "file://./blobs"),
        ("amqp://guest:guest@localhost:5672/", "amqp://guest:***@localhost:5672/"),
        ("https://token@exec.example/run", "https://***@exec.example/run"),
        ("https://exec.example/run?api_key=k&mode=fast", "https://exec.example/run?api_key=***&mode=fast"),
        ("http://[broken", "***"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
