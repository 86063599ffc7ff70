"""The README's ``ext_authz`` examples parse, use the field names of the upstream API types
(Envoy Gateway ``SecurityPolicy`` v1alpha1 ``ExtAuth``/``HTTPExtAuthService``, Gateway API
``HTTPExternalAuthFilter``/``HTTPAuthConfig``), and agree with what the router does: its
prefix, the headers it reads and the headers it answers with."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from router_plugins.auth.extauthz import EXT_AUTHZ_PREFIX
from router_plugins.auth.login import BACKCHANNEL_PATH, CALLBACK_PATH, LOGGED_OUT_PATH, LOGIN_PATH
from router_plugins.auth.settings import AuthConfig, IdentityHeaders

ROOT = Path(__file__).resolve().parents[2]

# Field names of the upstream Go types (json tags).
EXT_AUTH_FIELDS = {
    "grpc",
    "http",
    "headersToExtAuth",
    "bodyToExtAuth",
    "timeout",
    "failOpen",
    "recomputeRoute",
}
HTTP_EXT_AUTH_SERVICE_FIELDS = {
    "backendRef",
    "backendRefs",
    "backendSettings",
    "path",
    "headersToBackend",
}
EXTERNAL_AUTH_FILTER_FIELDS = {"protocol", "backendRef", "grpc", "http", "forwardBody"}
HTTP_AUTH_CONFIG_FIELDS = {"path", "allowedHeaders", "allowedResponseHeaders"}
BACKEND_REF_FIELDS = {"group", "kind", "name", "namespace", "port"}

# What the router reads from the check beyond Host, method, path and Authorization.
READS = {"cookie", "accept", "x-requested-with", "sec-fetch-mode"}


def _documents() -> list[dict[str, Any]]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### External authorization for other Gateways")
    section = readme[start : readme.index("\n### ", start + 1)]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    return [doc for block in blocks for doc in yaml.safe_load_all(block)]


def _answered() -> set[str]:
    headers = IdentityHeaders()
    names = {headers.user, headers.email, headers.groups, headers.name}
    return {n.lower() for n in names if n} | {"x-commons-identity", "cookie"}


def _sign_in_rule(route: dict[str, Any]) -> list[dict[str, Any]]:
    rules = [r for r in route["spec"]["rules"] if any("path" in m for m in r.get("matches", []))]
    exact = [
        r
        for r in rules
        if all(m["path"]["type"] == "Exact" for m in r["matches"])
        and r["backendRefs"][0]["name"] == "commons-router"
    ]
    assert len(exact) == 1
    paths = {m["path"]["value"] for m in exact[0]["matches"]}
    logout = AuthConfig().logout_path
    assert paths == {LOGIN_PATH, CALLBACK_PATH, logout, LOGGED_OUT_PATH, BACKCHANNEL_PATH}
    return exact


def test_envoy_gateway_security_policy() -> None:
    docs = _documents()
    policies = [d for d in docs if d["kind"] == "SecurityPolicy"]
    assert len(policies) == 1
    policy = policies[0]
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    ext = policy["spec"]["extAuth"]
    assert set(ext) <= EXT_AUTH_FIELDS
    assert "grpc" not in ext
    assert set(ext["http"]) <= HTTP_EXT_AUTH_SERVICE_FIELDS
    assert ext["http"]["path"] == EXT_AUTHZ_PREFIX
    assert ext["failOpen"] is False
    for ref in ext["http"]["backendRefs"]:
        assert set(ref) <= BACKEND_REF_FIELDS
    assert set(ext["headersToExtAuth"]) == READS
    assert set(ext["http"]["headersToBackend"]) == _answered()
    # The policy guards the app's route; the sign-in paths go to the router unguarded.
    target = policy["spec"]["targetRefs"][0]
    routes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "HTTPRoute"}
    assert target["kind"] == "HTTPRoute" and target["name"] in routes
    sign_in = [r for name, r in routes.items() if name != target["name"]]
    assert len(sign_in) == 1
    _sign_in_rule(sign_in[0])


def test_gateway_api_external_auth_filter() -> None:
    routes = [
        d
        for d in _documents()
        if d["kind"] == "HTTPRoute"
        and any(
            f.get("type") == "ExternalAuth"
            for r in d["spec"]["rules"]
            for f in r.get("filters", [])
        )
    ]
    assert len(routes) == 1
    route = routes[0]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    guarded = [r for r in route["spec"]["rules"] if r.get("filters")]
    assert len(guarded) == 1
    (flt,) = guarded[0]["filters"]
    auth = flt["externalAuth"]
    assert set(auth) <= EXTERNAL_AUTH_FILTER_FIELDS
    assert auth["protocol"] == "HTTP"
    assert set(auth["backendRef"]) <= BACKEND_REF_FIELDS
    assert set(auth["http"]) <= HTTP_AUTH_CONFIG_FIELDS
    assert auth["http"]["path"] == EXT_AUTHZ_PREFIX
    assert set(auth["http"]["allowedHeaders"]) == READS
    # Never empty: an empty list copies every header of the answer upstream.
    assert set(auth["http"]["allowedResponseHeaders"]) == _answered()
    (sign_in,) = _sign_in_rule(route)
    assert not sign_in.get("filters")


@pytest.mark.parametrize("header", sorted(READS))
def test_the_headers_read_are_the_ones_the_router_uses(header: str) -> None:
    source = "\n".join(
        (ROOT / "plugins" / "router_plugins" / "auth" / name).read_text().lower()
        for name in ("web.py", "plugin.py")
    )
    assert f'"{header}"' in source
