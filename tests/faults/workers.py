"""Worker processes started as a user starts them (``python -m worker run``), to kill and replace.

A fault test must not share a process with the worker it breaks: SIGKILL has to take the whole
worker down with nothing flushed, and the worker's event loop must not be the test's. So each
worker is a child process with its own HTTP port (``/readyz``, ``/metrics``) and its own log
file, whose tail goes into every failure message: a dead worker can say nothing else.

Idleness is read from ``/metrics``: a worker is idle when it holds no unsettled delivery, runs
no executor and has no committed event waiting in its outbox. A gauge the worker does not export
counts as idle, so this stays usable while the metric set evolves; the history checker, not this
reading, is what decides whether the outcome is right.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.fixtures.stoppable_s3 import free_port

REPO = Path(__file__).resolve().parents[2]
LOG_TAIL_LINES = 40
IDLE_GAUGES = ("meerkat_deliveries_waiting", "meerkat_runs_active", "meerkat_outbox_backlog")
FAULT_INJECTED = "fault_injected"


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, *, name: str = "worker",
                 cwd: Path = REPO) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = log_path
        self.fault = env.get("MEERKAT_FAULT")
        env = {**env, "MEERKAT_HTTP_PORT": str(self.port)}
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"], cwd=cwd, env=env,
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def killed_by_sigkill(self) -> bool:
        return self.process.poll() == -signal.SIGKILL

    def wait_ready(self, timeout: float = 60) -> None:
        """Until ``/readyz`` answers 200 (the consumers are registered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited early with {self.returncode}:\n"
                                     + self.log_tail())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready (GET /readyz) within {timeout:g}s:\n"
                             + self.log_tail())

    def gauges(self) -> dict[str, float] | None:
        """The unlabelled ``meerkat_*`` gauge values from ``/metrics``; None when unreachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                        timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("meerkat_") and "{" not in line:
                name, _, value = line.partition(" ")
                try:
                    values[name] = float(value)
                except ValueError:
                    continue
        return values

    def idle(self) -> bool:
        gauges = self.gauges()
        return gauges is not None and all(gauges.get(g, 0.0) == 0.0 for g in IDLE_GAUGES)

    def fault_points_fired(self) -> list[str]:
        """Points named by the ``fault_injected`` lines of the log (written before SIGKILL)."""
        fired = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if FAULT_INJECTED not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == FAULT_INJECTED:
                fired.append(str(record.get("point")))
        return fired

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- last {len(text)} lines of {self.log_path}\n" + "\n".join(text)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log.close()
