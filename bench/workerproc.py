"""The worker as a subprocess: its environment, ``migrate``, ``topology declare``, ``run``.

The environment is the caller's without any ``MEERKAT_*`` variable, plus the scenario's settings,
plus the build's own (``--worker-setting``).
The working directory is the scenario's temporary directory, so no ``.env`` file of the checkout
applies; ``PYTHONPATH`` gets the repository root so that ``MEERKAT_EXECUTOR`` can name
``bench.executors``. Output (stdout and stderr) goes to ``worker.log`` in that directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.errors import BenchFailure

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_SECONDS = 60.0
"""How long a stopped worker may take to exit (its drain grace is 30 s by default)."""
COMMAND_SECONDS = 120.0


@dataclass(frozen=True)
class WorkerBuild:
    """Which worker a scenario drives: this checkout's, or another checkout of the project
    (an earlier version, to measure before and after in one run) with its own ``.venv``."""

    root: Path = REPO_ROOT
    overrides: tuple[tuple[str, str], ...] = ()
    """``MEERKAT_*`` settings given to every worker of this build, over the scenario's."""
    name: str = ""
    """The label of its rows; empty: none for this checkout, the folder's name for another."""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return "" if self.root == REPO_ROOT else self.root.name

    def program(self) -> list[str]:
        """``meerkat-worker`` of the build's venv (this one: next to this interpreter, else
        ``-m worker``)."""
        if self.root == REPO_ROOT:
            script = Path(sys.executable).parent / "meerkat-worker"
            return [str(script)] if script.exists() else [sys.executable, "-m", "worker"]
        script = self.root / ".venv" / "bin" / "meerkat-worker"
        if not script.exists():
            raise BenchFailure(f"{script} does not exist: install that checkout first "
                               "(bash ops/test.sh --unit there makes its .venv)")
        return [str(script)]

    def environment(self, settings: Mapping[str, str]) -> dict[str, str]:
        """The caller's environment without ``MEERKAT_*``, plus ``settings``; ``PYTHONPATH``
        names the build's root first, then this checkout (for ``bench.executors``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEERKAT_")}
        roots = dict.fromkeys([str(self.root), str(REPO_ROOT)])
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([*roots, *([path] if path else [])])
        env.update(settings)
        env.update(self.overrides)
        return env


THIS_CHECKOUT = WorkerBuild()


async def run_command(args: list[str], settings: Mapping[str, str], cwd: Path,
                      build: WorkerBuild = THIS_CHECKOUT) -> None:
    """Run ``meerkat-worker ARGS`` to completion; fails with its output unless it exits 0."""
    process = await asyncio.create_subprocess_exec(
        *build.program(), *args, cwd=cwd, env=build.environment(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), COMMAND_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchFailure(
            f"timed out waiting for meerkat-worker {' '.join(args)} ({COMMAND_SECONDS:g}s)"
        ) from None
    if process.returncode != 0:
        text = output.decode(errors="replace").strip()
        raise BenchFailure(
            f"meerkat-worker {' '.join(args)} exited {process.returncode}: {text[-2000:]}"
        )


@dataclass
class LogSummary:
    """What the worker logged at warning level or above."""

    errors: int = 0
    warnings: int = 0
    other_lines: int = 0
    """Lines that are not JSON log records (tracebacks, prints)."""
    samples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.errors} error(s), {self.warnings} warning(s)"
        if self.other_lines:
            text += f", {self.other_lines} non-JSON line(s)"
        return text


def summarise_log(path: Path, keep: int = 5) -> LogSummary:
    summary = LogSummary()
    if not path.exists():
        return summary
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            level = str(record.get("level", "")).lower() if isinstance(record, dict) else ""
        except ValueError:
            summary.other_lines += 1
            if len(summary.samples) < keep:
                summary.samples.append(line[:300])
            continue
        if level in ("error", "critical", "exception", "fatal"):
            summary.errors += 1
        elif level in ("warning", "warn"):
            summary.warnings += 1
        else:
            continue
        if len(summary.samples) < keep:
            summary.samples.append(line[:300])
    return summary


def event_time(path: Path, event: str, offset: int = 0) -> float | None:
    """The wall-clock time (``time.time()`` scale) of the first JSON log record named ``event``
    from byte ``offset`` of the log on, or ``None`` when there is none."""
    if not path.exists():
        return None
    with path.open("rb") as log:
        log.seek(offset)
        for raw in log:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                stamp = record.get("timestamp")
                if isinstance(stamp, str):
                    with contextlib.suppress(ValueError):
                        return datetime.fromisoformat(stamp).timestamp()
    return None


class WorkerProcess:
    """One ``meerkat-worker run``; ``stop`` sends SIGTERM and waits for the exit code."""

    def __init__(self, settings: Mapping[str, str], cwd: Path,
                 build: WorkerBuild = THIS_CHECKOUT) -> None:
        self._build = build
        self._settings = dict(settings)
        self._cwd = cwd
        self.log_path = cwd / "worker.log"
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self._build.program(), "run", cwd=self._cwd,
                env=self._build.environment(self._settings),
                stdout=log, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BenchFailure("the worker was never started")
        return self._process.pid

    def check_alive(self) -> None:
        """Raises when the worker has exited on its own."""
        if self._process is not None and self._process.returncode is not None:
            raise BenchFailure(
                f"the worker exited with code {self._process.returncode} while it was awaited; "
                f"last log lines: {self.log_tail()}"
            )

    def log_tail(self, lines: int = 5) -> str:
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return " | ".join(text[-lines:])

    async def stop(self) -> int:
        """SIGTERM, then the exit code; a worker still running after :data:`STOP_SECONDS` is
        killed and that is a failure."""
        process = self._process
        if process is None:
            raise BenchFailure("the worker was never started")
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise BenchFailure(
                f"timed out waiting for the worker to exit after SIGTERM ({STOP_SECONDS:g}s)"
            ) from None

    async def kill(self) -> None:
        """Make sure the process is gone (after a failure)."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
