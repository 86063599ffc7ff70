"""The RouterPolicy CRD manifest: it parses, names the resource the router watches, and its
schema agrees with the router's own check of the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from router_plugins.auth.settings import RouteAuth, Rule
from router_plugins.ip_filter.settings import IpRules
from router_plugins.kubernetes.gateway.policy import (
    POLICY_GROUP,
    POLICY_KIND,
    POLICY_PLUGINS,
    PolicyInvalid,
    policy_settings,
)
from router_plugins.kubernetes.resources import ROUTER_POLICIES
from tests.support.routerpolicy import crd, router_policy_errors


def policy(spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "commons-router.io/v1alpha1",
        "kind": "RouterPolicy",
        "metadata": {"name": "p", "namespace": "app"},
        "spec": spec,
    }


EXAMPLES = [
    {"auth": {"policy": "authenticated", "allow": {"groups": ["admins"]}}},
    {"auth": {"policy": "public"}},
    {
        "auth": {
            "policy": "optional",
            "deny": {"emails": ["mallory@example.org"], "claims": {"acr": ["weak", 1]}},
            "methods": ["bearer"],
            "pass_access_token": True,
        }
    },
    {"ip_filter": {"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.6.6.0/24"]}},
    {"auth": {"allow": {"domains": ["example.org"]}}, "ip_filter": {"deny": ["192.0.2.1/32"]}},
]

BAD = [
    ({}, "should be non-empty"),
    ({"auth": {"policy": "required"}}, "is not one of"),
    ({"auth": {"methods": []}}, "should be non-empty"),
    ({"auth": {"methods": ["password"]}}, "is not one of"),
    ({"auth": {"allow": {"groups": "admins"}}}, "is not of type 'array'"),
    ({"auth": {"policy": "public", "allow": {"groups": ["a"]}}}, "public route cannot"),
    ({"ip_filter": {"allow": "10.0.0.0/8"}}, "is not of type 'array'"),
    ("auth", "is not of type 'object'"),
]


def test_the_crd_names_what_the_router_watches() -> None:
    manifest = crd()
    assert manifest["kind"] == "CustomResourceDefinition"
    spec = manifest["spec"]
    assert (spec["group"], spec["names"]["kind"]) == (POLICY_GROUP, POLICY_KIND)
    assert spec["scope"] == "Namespaced"
    (version,) = spec["versions"]
    assert (spec["group"], version["name"], spec["names"]["plural"]) == (
        ROUTER_POLICIES.group,
        ROUTER_POLICIES.version,
        ROUTER_POLICIES.plural,
    )
    assert manifest["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"


def test_the_schema_describes_every_setting_the_router_reads() -> None:
    (version,) = crd()["spec"]["versions"]
    properties = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(properties) == set(POLICY_PLUGINS)
    assert set(properties["auth"]["properties"]) == set(RouteAuth.model_fields)
    assert set(properties["auth"]["properties"]["allow"]["properties"]) == set(Rule.model_fields)
    assert set(properties["ip_filter"]["properties"]) == set(IpRules.model_fields)


@pytest.mark.parametrize("spec", EXAMPLES)
def test_the_schema_and_the_router_accept_the_examples(spec: dict[str, Any]) -> None:
    assert router_policy_errors(policy(spec)) == []
    assert policy_settings(policy(spec)) == spec


@pytest.mark.parametrize(("spec", "message"), BAD)
def test_the_schema_refuses_bad_policies(spec: Any, message: str) -> None:
    errors = router_policy_errors(policy(spec))
    assert any(message in error for error in errors), errors


@pytest.mark.parametrize("spec", [spec for spec, _ in BAD])
def test_the_router_refuses_them_too(spec: Any) -> None:
    with pytest.raises(PolicyInvalid):
        policy_settings(policy(spec))


def test_the_readme_example_is_valid() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("```yaml\napiVersion: commons-router.io/v1alpha1")
    block = readme[start + len("```yaml\n") : readme.index("```", start + 3)]
    example = next(yaml.safe_load_all(block))
    assert router_policy_errors(example) == []
    assert set(policy_settings(example)) == {"auth", "ip_filter"}
