"""deploy/kubernetes: valid for Kubernetes, and true to the server it deploys.

The schemas are Kubernetes' own, shipped inside kubernetes-validate (no
network), in strict mode (an unknown or misspelt field fails), for the
oldest release the manifests target (gRPC probes are GA from 1.27) and the
newest the package knows. The rest checks what no schema can: the probes
ask health names the server reports, the grace period covers the drain,
every EVENTROUTER_* variable is a setting with a valid value, the memory
limit holds the stream cap at docs/capacity.md's cost per stream, and
selectors, ports, users and the Secret's keys agree across files and docs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from eventrouter.server.config import resolve_config
from eventrouter.server.handlers import SERVICE_NAME
from eventrouter.server.ops.runtime import LIVENESS_SERVICE

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
OLDEST = "1.27"
VERSIONS = (OLDEST, kubernetes_validate.utils.latest_version())
MiB, KiB = 1024 * 1024, 1024


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


RESOURCES = {
    path.name: doc
    for path in sorted(MANIFESTS.glob("*.yaml"))
    if path.name != "kustomization.yaml"
    for doc in _load(path)
}


def _all(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in RESOURCES.values() if doc["kind"] == kind]


def _by_kind(kind: str) -> dict[str, Any]:
    (found,) = _all(kind)
    return found


DEPLOYMENT = _by_kind("Deployment")
POD = DEPLOYMENT["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]
ENV = {e["name"]: e for e in CONTAINER["env"]}


def _quantity(text: str) -> float:
    units = {"Ki": KiB, "Mi": MiB, "Gi": 1024 * MiB, "m": 1e-3, "": 1}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match is not None, f"not a quantity: {text}"
    return float(match[1]) * units[match[2]]


def _figure(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match is not None, f"docs/capacity.md no longer says {pattern!r}"
    return float(match[1])


def test_the_kustomization_lists_every_manifest() -> None:
    (kustomization,) = _load(MANIFESTS / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(RESOURCES)
    assert {image["name"] for image in kustomization["images"]} == {
        c["image"] for c in POD["containers"] + POD["initContainers"]
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_each_manifest_is_valid_for_kubernetes(name: str, version: str) -> None:
    kubernetes_validate.validate(RESOURCES[name], version, strict=True)


def test_probes_ask_the_health_names_the_server_reports() -> None:
    readiness, liveness = CONTAINER["readinessProbe"], CONTAINER["livenessProbe"]
    grpc_port = next(p["containerPort"] for p in CONTAINER["ports"] if p["name"] == "grpc")
    assert readiness["grpc"] == {"port": grpc_port, "service": SERVICE_NAME}
    # Not the router's name: that one follows Redis, and an outage must not restart nodes.
    assert liveness["grpc"] == {"port": grpc_port, "service": LIVENESS_SERVICE}


def test_the_grace_period_covers_the_pre_stop_wait_and_the_drain() -> None:
    command = CONTAINER["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = float(ENV["EVENTROUTER_SHUTDOWN_GRACE_S"]["value"])
    assert POD["terminationGracePeriodSeconds"] >= float(command[1]) + drain + 5


def test_every_setting_is_a_server_setting_with_a_valid_value() -> None:
    """The image's and the pod's environment, read as ``eventrouter serve`` reads them."""
    image = dict(re.findall(r"(EVENTROUTER_[A-Z_]+)=(\S+)", (ROOT / "Dockerfile").read_text()))
    stand_ins = {"secretKeyRef": "redis://redis:6379/0", "fieldRef": "eventrouter-7d9c-x2"}
    pod = {
        name: entry["value"] if "value" in entry else stand_ins[next(iter(entry["valueFrom"]))]
        for name, entry in ENV.items()
    }
    config = resolve_config({}, image | pod).config  # raises ConfigError naming what is wrong
    assert config.broker.startswith("redis://")
    ports = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    assert config.listen == f"0.0.0.0:{ports['grpc']}"
    assert config.metrics_listen == f"0.0.0.0:{ports['http']}"
    assert config.web_listen == f"0.0.0.0:{ports['web']}"


def test_the_memory_limit_holds_the_stream_cap_at_the_measured_cost() -> None:
    capacity = (ROOT / "docs" / "capacity.md").read_text()
    per_stream = _figure(r"memory per idle stream.*?\| ([0-9.]+) KiB", capacity)
    baseline = _figure(r"process baseline RSS.*?\| ([0-9.]+) MiB", capacity)
    streams = int(ENV["EVENTROUTER_MAX_STREAMS_PER_NODE"]["value"])
    resources = CONTAINER["resources"]
    needed = streams * per_stream * KiB + baseline * MiB
    assert needed < _quantity(resources["limits"]["memory"])
    # One event loop uses at most one core: half of it at the design load.
    assert _quantity(resources["requests"]["cpu"]) == 0.5


def test_selectors_ports_and_user_agree() -> None:
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"] == labels
    assert _by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == labels
    service = _by_kind("Service")
    assert service["spec"]["selector"] == labels
    port_names = {p["name"] for p in CONTAINER["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == port_names
    # gRPC and the web listener (Connect, gRPC-Web) share their paths: one host each.
    protocols = {"grpc": "GRPC", "web": None}
    ingresses = {}
    for ingress in _all("Ingress"):
        (rule,) = ingress["spec"]["rules"]
        (path,) = rule["http"]["paths"]
        assert path["path"] == f"/{SERVICE_NAME}/"
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        port = backend["port"]["name"]
        annotations = ingress["metadata"]["annotations"]
        assert annotations.get("nginx.ingress.kubernetes.io/backend-protocol") == protocols[port]
        ingresses[port] = rule["host"]
    assert set(ingresses) == set(protocols)
    assert len(set(ingresses.values())) == len(ingresses)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"USER {POD['securityContext']['runAsUser']}:" in dockerfile


def test_the_keys_reach_the_server_as_a_private_file_and_the_secret_is_documented() -> None:
    (init,) = POD["initContainers"]
    assert init["command"][:3] == ["install", "-m", "0600"]
    assert init["command"][-1] == ENV["EVENTROUTER_KEYS_FILE"]["value"]
    secret_volume = next(v for v in POD["volumes"] if "secret" in v)["secret"]
    keys = {item["key"] for item in secret_volume["items"]}
    keys |= {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in ENV.values()
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    command = re.search(
        r"kubectl create secret generic (\S+)(.*?)\n\n",
        (ROOT / "docs" / "deploy.md").read_text(),
        re.DOTALL,
    )
    assert command is not None, "docs/deploy.md shows no `kubectl create secret generic`"
    assert command[1] == secret_volume["secretName"]
    for key in keys:
        assert f"--from-file={key}=" in command[2] or f"--from-literal={key}=" in command[2]
