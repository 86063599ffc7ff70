"""The manifests in config/kubernetes/: they parse, agree with each other and with the
router's configuration, and grant exactly what the provider uses."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.config.loader import load_config_text
from router.registry import discover_plugins, validate_all
from router_plugins.kubernetes.annotations import parse_annotations
from router_plugins.kubernetes.mapping import ClassSelection, is_ours
from router_plugins.kubernetes.resources import (
    ALL,
    GATEWAY_API,
    GATEWAY_STATUS_WRITES,
    OWN_POD_READ,
    STATUS_WRITES,
    VERBS,
)
from router_plugins.kubernetes.selfimage import CONTAINER_ENV, POD_NAME_ENV, POD_NAMESPACE_ENV
from router_plugins.kubernetes.settings import KubernetesSettings

DIRECTORY = Path(__file__).resolve().parents[2] / "config" / "kubernetes"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    kustomization = documents(DIRECTORY / "kustomization.yaml")[0]
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for obj in documents(DIRECTORY / name):
            found[obj["kind"]] = obj
    return found


def test_kustomization_lists_every_manifest() -> None:
    kustomization = documents(DIRECTORY / "kustomization.yaml")[0]
    on_disk = {p.name for p in DIRECTORY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


def test_every_object_is_well_formed(objects: dict[str, dict[str, Any]]) -> None:
    assert set(objects) == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "IngressClass",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    namespace = objects["Namespace"]["metadata"]["name"]
    for kind, obj in objects.items():
        assert obj["apiVersion"] and obj["metadata"]["name"], kind
        cluster_scoped = kind in ("Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass")
        assert ("namespace" in obj["metadata"]) != cluster_scoped, kind
        if not cluster_scoped:
            assert obj["metadata"]["namespace"] == namespace, kind


def test_objects_reference_each_other(objects: dict[str, dict[str, Any]]) -> None:
    account, role = objects["ServiceAccount"], objects["ClusterRole"]
    binding, deployment = objects["ClusterRoleBinding"], objects["Deployment"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert objects["RoleBinding"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": objects["Role"]["metadata"]["name"],
    }
    assert objects["RoleBinding"]["subjects"] == binding["subjects"]
    pod = deployment["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    labels = pod["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        objects["Service"]["spec"]["selector"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in objects["Service"]["spec"]["ports"]} <= port_names
    (config_volume,) = [v for v in pod["spec"]["volumes"] if "configMap" in v]
    assert config_volume["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == config_volume["name"]]
    assert container["args"] == ["serve", "--config", mount["mountPath"] + "/config.yaml"]


def router_config(objects: dict[str, dict[str, Any]]) -> Any:
    return load_config_text(objects["ConfigMap"]["data"]["config.yaml"], "configmap.yaml")


def test_router_config_is_valid_and_names_our_ingress_class(
    objects: dict[str, dict[str, Any]],
) -> None:
    loaded = router_config(objects)
    assert validate_all(loaded.config, discover_plugins()) == []
    (entry,) = [p for p in loaded.config.plugins if p.name == "kubernetes"]
    settings = KubernetesSettings.model_validate(entry.config)
    ingress_class = objects["IngressClass"]
    assert ingress_class["metadata"]["name"] == settings.ingress_class
    assert ingress_class["spec"]["controller"] == settings.controller


def test_deployment_is_highly_available_probed_and_locked_down(
    objects: dict[str, dict[str, Any]],
) -> None:
    deployment = objects["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    admin_port = int(router_config(objects).config.admin.listen.rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ports[container["readinessProbe"]["httpGet"]["port"]] == admin_port
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_the_router_is_told_its_pod_to_publish_its_image_digest(
    objects: dict[str, dict[str, Any]],
) -> None:
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    field = {k: v.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for k, v in env.items()}
    assert field[POD_NAME_ENV] == "metadata.name"
    assert field[POD_NAMESPACE_ENV] == "metadata.namespace"
    assert env[CONTAINER_ENV]["value"] == container["name"]
    # Only in its own namespace (the Role), not cluster-wide.
    pods = [
        rule
        for rule in objects["Role"]["rules"]
        if "" in rule["apiGroups"] and "pods" in rule["resources"]
    ]
    assert any("get" in rule["verbs"] for rule in pods), "reading its own Pod needs get"
    assert (
        objects["Role"]["metadata"]["namespace"] == objects["Deployment"]["metadata"]["namespace"]
    )


def test_prestop_matches_the_drain(objects: dict[str, dict[str, Any]]) -> None:
    drain = router_config(objects).config.drain
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop == drain.delay
    # After the cut at drain.grace the process still stops its plugins (a tracing exporter's
    # last flush takes up to export_timeout + 1 s): the kubelet must not kill it then.
    teardown = 10
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain.delay + drain.grace + teardown


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def clusterrole() -> dict[str, Any]:
    return documents(DIRECTORY / "clusterrole.yaml")[0]


def uncovered(calls: Iterable[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """The calls, as (group, resource, verb), that the ClusterRole does not grant."""
    return set(calls) - granted(clusterrole())


def role() -> dict[str, Any]:
    return documents(DIRECTORY / "role.yaml")[0]


def test_rbac_grants_exactly_what_the_plugin_calls() -> None:
    needed = {(r.group, r.plural, verb) for r in (*ALL, *GATEWAY_API) for verb in VERBS}
    needed_writes = {write for write in STATUS_WRITES if write[1] != "leases"}
    needed_writes |= set(GATEWAY_STATUS_WRITES)
    assert uncovered(needed | needed_writes) == set()
    # Nothing more: every verb granted is one the plugin calls.
    assert granted(clusterrole()) == needed | needed_writes
    assert granted(role()) == {w for w in STATUS_WRITES if w[1] == "leases"} | {OWN_POD_READ}


def test_the_lease_rules_name_the_configured_lease(objects: dict[str, dict[str, Any]]) -> None:
    (entry,) = [p for p in router_config(objects).config.plugins if p.name == "kubernetes"]
    status = KubernetesSettings.model_validate(entry.config).status
    assert status is not None
    assert status.namespace() == objects["Role"]["metadata"]["namespace"]
    named = [rule for rule in role()["rules"] if "resourceNames" in rule]
    assert all(rule["resourceNames"] == [status.lease_name] for rule in named)
    # The Service whose load-balancer address is published is the router's own.
    service = objects["Service"]["metadata"]
    assert status.service == f"{service['namespace']}/{service['name']}"
    env = {
        e["name"]: e
        for e in objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    # This replica's name in the Lease comes from there too.
    assert env[POD_NAME_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_example_ingress_is_ours_and_its_annotations_are_valid(
    objects: dict[str, dict[str, Any]],
) -> None:
    example = {o["kind"]: o for o in documents(DIRECTORY / "example" / "app.yaml")}
    ingress = example["Ingress"]
    selection = ClassSelection(
        objects["IngressClass"]["metadata"]["name"],
        objects["IngressClass"]["spec"]["controller"],
    )
    assert is_ours(ingress, selection, default=False)
    settings, problems = parse_annotations(ingress["metadata"]["annotations"])
    assert problems == []
    assert settings.route_fields["retries"] == "2"
    assert settings.route_fields["https_redirect"] == "true"
    assert ingress["spec"]["tls"] == [{"hosts": ["hello.example.org"], "secretName": "hello-tls"}]
    pod_annotations = example["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert {"commons-router.io/repository", "commons-router.io/commit"} <= set(pod_annotations)


def test_service_exposes_http_and_https_on_the_configured_listeners(
    objects: dict[str, dict[str, Any]],
) -> None:
    config = router_config(objects).config
    listeners = {spec.name: spec for spec in config.public_listeners()}
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service_ports = {p["port"]: p["targetPort"] for p in objects["Service"]["spec"]["ports"]}
    assert service_ports == {80: "http", 443: "https"}
    assert listeners["http"].tls is None
    assert listeners["https"].tls is not None
    for name in ("http", "https"):
        assert int(listeners[name].listen.rsplit(":", 1)[1]) == container_ports[name]
    # Certificates come through the API: the pod mounts no Secret.
    volumes = objects["Deployment"]["spec"]["template"]["spec"].get("volumes", [])
    assert not [v for v in volumes if "secret" in v]
