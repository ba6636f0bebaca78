"""Misconfiguration the program refuses without any service: one line, the documented code.

Each test runs the real ``meerkat-worker`` as a subprocess and checks the exit code and the
exact line it prints on stderr (besides JSON log lines); none shows a traceback. A silent broker
and a hanging start-up are plain TCP listeners of the test.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.worker_process import (
    Running,
    SilentListener,
    ameerkat,
    environment,
    free_port,
    human_lines,
    meerkat,
)
from worker.cli.common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE

pytestmark = pytest.mark.unit

CLOSED_BROKER = "amqp://guest:guest@127.0.0.1:1/"
"""Port 1 of the loopback refuses at once: a test that gets this far fails with exit code 3."""


def refused(done: subprocess.CompletedProcess[str], code: int, line: str) -> None:
    """The command exited with ``code`` and printed exactly ``line`` (and no traceback)."""
    assert (done.returncode, human_lines(done.stderr)) == (code, [line]), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("amqp_url", "http://broker:5672/",
         "MEERKAT_AMQP_URL: the scheme 'http' is not one of amqp, amqps; write it as "
         "amqp://USER:PASSWORD@HOST:5672/VHOST"),
        ("amqp_url", "localhost",
         "MEERKAT_AMQP_URL: not a URL of the form amqp://USER:PASSWORD@HOST:5672/VHOST"),
        ("database_url", "mysql://meerkat:hunter2@db/meerkat",
         "MEERKAT_DATABASE_URL: the scheme 'mysql' is not one of postgresql, postgres, "
         "postgresql+asyncpg, sqlite, sqlite+aiosqlite, memory; write it as "
         "postgresql://USER:PASSWORD@HOST:5432/DATABASE or sqlite:///PATH"),
        ("blob_url", "ftp://files.example/images",
         "MEERKAT_BLOB_URL: the scheme 'ftp' is not one of file, s3, memory; write it as "
         "s3://ACCESS:SECRET@HOST:PORT/BUCKET or file:///PATH"),
    ],
)
def test_a_url_of_an_unknown_scheme_is_a_configuration_error(
    setting: str, value: str, message: str, tmp_path: Path
) -> None:
    done = meerkat(["run"], environment(**{setting: value}, http_port="0"), tmp_path)

    refused(done, EXIT_USAGE, f"meerkat-worker: invalid configuration: {message}")
    assert "hunter2" not in done.stderr
    assert list(tmp_path.iterdir()) == [], "nothing was made"


def test_a_sqlite_database_in_a_missing_folder_is_refused_not_made(tmp_path: Path) -> None:
    folder = tmp_path / "no" / "such"
    env = environment(database_url=f"sqlite+aiosqlite:///{folder}/meerkat.db",
                      amqp_url=CLOSED_BROKER, blob_url="memory://", http_port="0")

    done = meerkat(["run"], env, tmp_path)

    refused(done, EXIT_USAGE,
            f"meerkat-worker run: the folder {folder} of the SQLite database does not exist: "
            "create it, or set MEERKAT_DATABASE_URL to a file in an existing folder")
    assert not (tmp_path / "no").exists()


def test_an_executor_that_cannot_be_imported_is_refused_before_anything_opens(
    tmp_path: Path,
) -> None:
    env = environment(executor="no_such_package.agent:execute", amqp_url=CLOSED_BROKER,
                      blob_url="memory://", http_port="0")

    done = meerkat(["run"], env, tmp_path)

    refused(done, EXIT_USAGE,
            "meerkat-worker run: MEERKAT_EXECUTOR: cannot load executor "
            "'no_such_package.agent:execute': No module named 'no_such_package'; set "
            "MEERKAT_EXECUTOR to the module:callable of an importable executor")
    assert not (tmp_path / "meerkat.db").exists(), "refused before the database was opened"


def test_an_http_port_in_use_is_refused_first(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = environment(http_port=str(port), amqp_url=CLOSED_BROKER, blob_url="memory://")

        done = meerkat(["run"], env, tmp_path)

    refused(done, EXIT_USAGE,
            f"meerkat-worker run: MEERKAT_HTTP_PORT {port} is in use by another process; stop "
            "that process or choose another port with MEERKAT_HTTP_PORT")
    assert not (tmp_path / "meerkat.db").exists(), "refused before the database was opened"


def test_inspect_from_another_folder_makes_no_database(tmp_path: Path) -> None:
    done = meerkat(["inspect", "rt:anyone"], environment(), tmp_path)

    refused(done, EXIT_USAGE,
            f"meerkat-worker inspect: there is no SQLite database at {tmp_path}/meerkat.db: run "
            "the command where the worker keeps its database, or set MEERKAT_DATABASE_URL to "
            "that database")
    assert list(tmp_path.iterdir()) == []


def test_inspect_of_a_database_never_migrated_says_to_migrate(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "meerkat.db").close()

    done = meerkat(["inspect", "rt:anyone"], environment(), tmp_path)

    refused(done, EXIT_FAILED,
            "meerkat-worker inspect: the database schema is not migrated (revision none, this "
            "version needs 0008); run: meerkat-worker migrate")


def test_inspect_of_an_unknown_runtime_exits_6(tmp_path: Path) -> None:
    assert meerkat(["migrate"], environment(), tmp_path).returncode == EXIT_OK

    done = meerkat(["inspect", "rt:nobody"], environment(), tmp_path)

    assert (done.returncode, done.stdout, done.stderr) == (
        EXIT_NOT_FOUND, "runtime rt:nobody: not found\n", "")
    json_done = meerkat(["inspect", "rt:nobody", "--json"], environment(), tmp_path)
    assert json_done.returncode == EXIT_NOT_FOUND
    assert '"exists": false' in json_done.stdout


def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    assert meerkat(["migrate"], environment(), tmp_path).returncode == EXIT_OK
    with sqlite3.connect(tmp_path / "meerkat.db") as database:
        database.execute("UPDATE alembic_version SET version_num = '9999'")
    line = ("the database schema is at revision 9999, which this version does not know (its "
            "latest is 0008): a newer version migrated it; run a version of meerkat-worker "
            "that knows it")

    for command in ("run", "migrate"):
        done = meerkat([command], environment(amqp_url=CLOSED_BROKER, http_port="0"), tmp_path)
        refused(done, EXIT_FAILED, f"meerkat-worker {command}: {line}")


async def test_a_silent_broker_is_given_up_after_the_connect_timeout(tmp_path: Path) -> None:
    async with SilentListener() as broker:
        env = environment(amqp_url=f"amqp://guest:hunter2@127.0.0.1:{broker.port}/",
                          connect_timeout_seconds="1", blob_url="memory://", http_port="0")

        done = await ameerkat(["run"], env, tmp_path, within=30)

    refused(done, EXIT_UNAVAILABLE,
            "meerkat-worker run: cannot reach a dependency: the broker at "
            f"amqp://guest:***@127.0.0.1:{broker.port}/ did not answer within 1s "
            "(MEERKAT_CONNECT_TIMEOUT_SECONDS)")
    assert "hunter2" not in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_during_start_up_stops_the_worker_at_once(
    sig: signal.Signals, tmp_path: Path
) -> None:
    """Start-up stuck on a broker that never answers: ``/readyz`` says so (the HTTP endpoint
    is up first), and SIGTERM or SIGINT ends the process cleanly at once."""
    port = free_port()
    async with SilentListener() as broker:
        env = environment(amqp_url=f"amqp://guest:guest@127.0.0.1:{broker.port}/",
                          connect_timeout_seconds="120", blob_url="memory://",
                          http_port=str(port))
        worker = await Running.start(env, tmp_path)
        try:
            await broker.wait_accepted("the worker's broker connection")
            status, body = await _readyz(port)
            assert status == 503
            assert body["failing"] == {"startup": "starting: connecting to the broker"}

            worker.send(sig)

            assert await worker.exit_code(within=10) == EXIT_OK
        finally:
            await worker.kill()
    assert human_lines("\n".join(worker.stderr)) == []
    stopped = [e for e in worker.events() if e["event"] == "worker_start_abandoned"]
    assert [e["phase"] for e in stopped] == ["connecting to the broker"]


async def _readyz(port: int) -> tuple[int, dict[str, object]]:
    """``/readyz``; the HTTP endpoint is up before the worker connects to anything."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status, await response.json()
