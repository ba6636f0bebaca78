"""The command line as a shell sees it: help that loads no service library, completion, the
version, progress bars only on a terminal, the settings listed by ``run --help``."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from persistence.blobs import FileBlobStore
from tests.unit.images import b64, png_bytes
from worker.cli.common import EXIT_OK, EXIT_USAGE
from worker.cli.main import _IMPLEMENTATIONS, main
from worker.cli.settings_help import format_default
from worker.config import ENV_PREFIX, Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICE_LIBRARIES = ("aio_pika", "aiormq", "sqlalchemy", "asyncpg", "aiosqlite", "alembic",
                     "minio", "aiohttp", "prometheus_client", "structlog")
PROCESS_SECONDS = 60


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MEERKAT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_help_of_every_command_loads_no_service_library() -> None:
    commands = sorted({""} | {name for name in _IMPLEMENTATIONS}
                      | {name.split()[0] for name in _IMPLEMENTATIONS})
    script = (
        "import sys\n"
        "from worker.cli.main import main\n"
        f"for command in {commands!r}:\n"
        "    assert main([*command.split(), '--help']) == 0, command\n"
        f"loaded = sorted(m for m in {SERVICE_LIBRARIES!r} if m in sys.modules)\n"
        "print('loaded:', loaded, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=PROCESS_SECONDS, check=False)
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("meerkat-worker ")


def test_show_completion_prints_a_script_for_the_program(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--show-completion", "bash"]) == EXIT_OK
    script = capsys.readouterr().out
    assert "_MEERKAT_WORKER_COMPLETE" in script
    assert "complete -o default -F _meerkat_worker_completion meerkat-worker" in script


def test_completion_offers_commands_and_command_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("_MEERKAT_WORKER_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "meerkat-worker dlq ")
    monkeypatch.setenv("COMP_CWORD", "2")
    assert main([]) == EXIT_OK
    assert capsys.readouterr().out.split() == ["list", "replay", "purge"]

    monkeypatch.setenv("COMP_WORDS", "meerkat-worker send command rt:demo abandon_")
    monkeypatch.setenv("COMP_CWORD", "4")
    assert main([]) == EXIT_OK
    assert capsys.readouterr().out.split() == ["abandon_pending", "abandon_input"]


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "command", "rt:demo", "abandon_pending", "--abandon-reason", "bored"],
        ["send", "command", "rt:demo", "retire", "--abandon-reason", "stopped"],
    ],
)
def test_an_abandon_reason_that_does_not_fit_is_a_usage_error(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MEERKAT_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
    assert main(argv) == EXIT_USAGE
    assert "abandon" in capsys.readouterr().err


def _settings(model: type[BaseModel], prefix: str) -> list[tuple[str, object]]:
    """Every setting's variable and default, read from the model itself."""
    found: list[tuple[str, object]] = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            found += _settings(type(default), f"{prefix}{name.upper()}__")
        else:
            found.append((f"{prefix}{name.upper()}", default))
    return found


def test_run_help_lists_every_setting_with_its_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["run", "--help"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    expected = _settings(Settings, ENV_PREFIX)
    assert len(expected) > 30
    for variable, default in expected:
        [line] = [line for line in lines if f" {variable} " in line]
        assert f" {format_default(default)} " in line, (variable, line)
    assert format_default(Settings.model_fields["amqp_url"].default) == (
        "amqp://guest:guest@localhost:5672/")
    assert format_default(7 * 86400.0) == "604800"
    assert format_default(True) == "true"
    assert format_default("") == "empty"
    assert format_default(None) == "—"
    assert format_default({}) == "{}"


# --- progress ---------------------------------------------------------------------------------


def _orphan_blob(tmp_path: Path) -> dict[str, str]:
    """An SQLite store and a file blob store with one old unreferenced blob; the environment
    that names them."""
    env = {"MEERKAT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/meerkat.db",
           "MEERKAT_BLOB_URL": f"file://{tmp_path / 'blobs'}"}
    store = FileBlobStore(tmp_path / "blobs")
    orphan = asyncio.run(store.put_image("image/png", b64(png_bytes(width=2))))
    old = time.time() - 3600
    os.utime(store.path_for(orphan), (old, old))
    return env


def test_blobs_gc_shows_no_progress_when_stderr_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in _orphan_blob(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert main(["migrate"]) == EXIT_OK
    capsys.readouterr()

    assert main(["blobs", "gc", "--grace", "1m"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "removed 1 unreferenced blob(s)"
    assert err == ""


def test_blobs_gc_draws_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    env = {**os.environ, **_orphan_blob(tmp_path), "COLUMNS": "100"}
    command = [sys.executable, "-m", "worker"]
    subprocess.run([*command, "migrate"], env=env, cwd=tmp_path, check=True,
                   capture_output=True, timeout=PROCESS_SECONDS)
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([*command, "blobs", "gc", "--grace", "1m"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=follower,
                              timeout=PROCESS_SECONDS, check=False)
        os.close(follower)
        screen = _read_all(leader)
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert done.stdout.decode().splitlines()[-1] == "removed 1 unreferenced blob(s)"
    assert "deleting blobs" in screen
    assert "1/1" in screen


def _read_all(leader: int) -> str:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other side is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
