"""The ``meerkat-worker`` program as a subprocess, for black-box tests of the command line.

``environment(**settings)`` is the calling process's environment without any ``MEERKAT_*``
variable, plus the given settings (``http_port="0"`` becomes ``MEERKAT_HTTP_PORT=0``).
``meerkat(...)`` runs one command to its end; ``Running`` is a ``run`` under way, whose log
lines (JSON on stderr) can be awaited and to which signals can be sent. ``human_lines`` keeps
what is not a JSON log line: the one line a refused command prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TIMEOUT_SECONDS = 60.0
"""Longest a command of these tests may take before the test fails."""


def program() -> list[str]:
    """The installed ``meerkat-worker`` next to this Python, else ``python -m worker``."""
    script = Path(sys.executable).with_name("meerkat-worker")
    found = shutil.which(str(script))
    return [found] if found else [sys.executable, "-m", "worker"]


def environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MEERKAT_")}
    env.update({f"MEERKAT_{name.upper()}": value for name, value in settings.items()})
    return env


def meerkat(
    args: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = TIMEOUT_SECONDS
) -> subprocess.CompletedProcess[str]:
    """Run one command to its end (the test fails if it takes longer than ``timeout``)."""
    return subprocess.run([*program(), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


async def ameerkat(
    args: Sequence[str], env: dict[str, str], cwd: Path, within: float = TIMEOUT_SECONDS
) -> subprocess.CompletedProcess[str]:
    """:func:`meerkat` without blocking the event loop (the test may serve something to it)."""
    return await asyncio.to_thread(meerkat, args, env, cwd, within)


def human_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not JSON log lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


def log_events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Running:
    """A ``meerkat-worker run`` under way: its log lines are collected as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr: list[str] = []
        self._ended = False
        self._arrived = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, env: dict[str, str], cwd: Path) -> Running:
        process = await asyncio.create_subprocess_exec(
            *program(), "run", env=env, cwd=cwd,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            async with self._arrived:
                self.stderr.append(raw.decode().rstrip("\n"))
                self._arrived.notify_all()
        async with self._arrived:  # the end of the output: nothing more will match
            self._ended = True
            self._arrived.notify_all()

    def events(self) -> list[dict[str, Any]]:
        return log_events("\n".join(self.stderr))

    async def wait_for_event(
        self, what: str, matches: Callable[[dict[str, Any]], bool],
        within: float = TIMEOUT_SECONDS,
    ) -> dict[str, Any]:
        """The first log event that ``matches``; fails naming ``what`` after ``within`` s."""
        async def found() -> dict[str, Any] | None:
            async with self._arrived:
                await self._arrived.wait_for(
                    lambda: self._ended or any(matches(e) for e in self.events())
                )
                return next((e for e in self.events() if matches(e)), None)

        event = None
        with contextlib.suppress(TimeoutError):
            event = await asyncio.wait_for(found(), within)
        if event is None:
            raise AssertionError(f"no log event {what} within {within}s; stderr:\n"
                                 + "\n".join(self.stderr))
        return event

    def send(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def exit_code(self, within: float = TIMEOUT_SECONDS) -> int:
        """The exit code, once the process ended within ``within`` seconds."""
        try:
            code = await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            self.process.kill()
            raise AssertionError(f"the worker did not exit within {within}s; stderr:\n"
                                 + "\n".join(self.stderr)) from None
        await self._reader
        return code

    async def kill(self) -> None:
        """Make sure the process is gone (for a test's cleanup)."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()


class SilentListener:
    """A TCP port that accepts connections and never says a word: a broker or an executor
    that hangs. ``accepted`` is set at the first connection."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> SilentListener:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.accepted.set()

    async def wait_accepted(self, what: str, within: float = TIMEOUT_SECONDS) -> None:
        try:
            await asyncio.wait_for(self.accepted.wait(), within)
        except TimeoutError:
            raise AssertionError(f"no connection from {what} within {within}s") from None
