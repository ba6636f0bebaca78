"""ops/k8s renders and every manifest is valid; the shard count agrees everywhere.

Each overlay (and the base) is rendered with ``kubectl kustomize`` when kubectl is installed;
without it the base's files are checked one by one. Built-in kinds are validated against the
Kubernetes OpenAPI schemas bundled with ``kubernetes-validate`` (strict: unknown fields fail);
the KEDA and Prometheus Operator kinds against the CRD subsets in ops/k8s/schemas/. Nothing
goes to the network.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "ops" / "k8s"
KUBERNETES_VERSION = "1.30.0"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject_keda.sh_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication_keda.sh_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_monitoring.coreos.com_v1.json",
}
TARGETS = ["base", "overlays/dev", "overlays/prod"]

Doc = dict[str, Any]


def load_all(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(target: str) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if target != "base":
            pytest.skip("kubectl (with its built-in kustomize) is not installed")
        docs: list[Doc] = []
        for name in yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]:
            docs += load_all((K8S / "base" / name).read_text())
        return docs
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / target)],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return load_all(result.stdout)


def find(docs: list[Doc], kind: str) -> Doc:
    matches = [doc for doc in docs if doc["kind"] == kind]
    assert len(matches) == 1, kind
    return matches[0]


def validate(doc: Doc) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        schema = json.loads((K8S / "schemas" / CRD_SCHEMAS[key]).read_text())
        jsonschema.validate(doc, schema)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_manifests_are_valid(target: str) -> None:
    docs = render(target)
    kinds = {doc["kind"] for doc in docs}
    assert kinds >= {"ConfigMap", "Deployment", "Service", "ServiceMonitor",
                     "PodDisruptionBudget", "Job", "ScaledObject", "TriggerAuthentication"}
    for doc in docs:
        validate(doc)


def test_secret_example_is_valid() -> None:
    for doc in load_all((K8S / "base" / "secret.example.yaml").read_text()):
        validate(doc)


@pytest.mark.parametrize("target", TARGETS)
def test_shard_count_has_one_value(target: str) -> None:
    docs = render(target)
    shards = int(find(docs, "ConfigMap")["data"]["MEERKAT_SHARDS"])
    scaled = find(docs, "ScaledObject")["spec"]
    assert scaled["maxReplicaCount"] == shards
    assert scaled["triggers"][0]["type"] == "rabbitmq"


def test_dev_overlay_changes_the_shard_count_everywhere() -> None:
    docs = render("overlays/dev")
    assert find(docs, "ConfigMap")["data"]["MEERKAT_SHARDS"] == "4"
    assert find(docs, "ScaledObject")["spec"]["maxReplicaCount"] == 4


def test_alert_and_compose_agree_with_the_base() -> None:
    base = yaml.safe_load((K8S / "base" / "configmap.yaml").read_text())["data"]["MEERKAT_SHARDS"]
    alerts = (ROOT / "ops" / "prometheus" / "alerts.yaml").read_text()
    match = re.search(r"sum\(meerkat_consumers_registered\) < (\d+)", alerts)
    assert match
    assert match.group(1) == base
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert compose["x-worker"]["environment"]["MEERKAT_SHARDS"] == base


def test_service_and_monitor_reach_the_http_port() -> None:
    docs = render("base")
    container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "http", "containerPort": 8080} in container["ports"]
    assert find(docs, "Service")["spec"]["ports"][0]["targetPort"] == "http"
    assert find(docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "http"
