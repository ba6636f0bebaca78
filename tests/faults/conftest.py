"""Worker processes started as a user would (``python -m worker run``), to kill and restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.rabbitmq import TopologyFactory
from worker.topology import Topology

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = _free_port()
        self.log_path = log_path
        env = {**env, "MEERKAT_HTTP_PORT": str(self.port)}
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"], cwd=REPO, env=env,
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        """Until ``/readyz`` answers 200 (the consumers are registered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log.close()


WorkerFactory = Callable[[], WorkerProcess]


@pytest.fixture
def worker_env(
    amqp_url: str, postgres_url: str, s3_url: str, topology_factory: TopologyFactory
) -> tuple[dict[str, str], Topology]:
    topology = topology_factory(shards=4, delivery_limit=5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEERKAT_")}
    env.update({
        "MEERKAT_AMQP_URL": amqp_url,
        "MEERKAT_DATABASE_URL": postgres_url,
        "MEERKAT_BLOB_URL": s3_url,
        "MEERKAT_SHARDS": str(topology.shards),
        "MEERKAT_DELIVERY_LIMIT": str(topology.delivery_limit),
        "MEERKAT_TOPOLOGY_PREFIX": topology.prefix,
        "MEERKAT_SHUTDOWN_GRACE_SECONDS": "10",
        "MEERKAT_LOG_FORMAT": "json",
    })
    return env, topology


@pytest.fixture
def worker_factory(
    worker_env: tuple[dict[str, str], Topology], tmp_path: Path
) -> Iterator[WorkerFactory]:
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        process = WorkerProcess(worker_env[0], tmp_path / f"worker-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
