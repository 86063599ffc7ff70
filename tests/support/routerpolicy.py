"""The RouterPolicy CRD's OpenAPI v3 schema, as the API server applies it (the
``x-kubernetes-validations`` CEL rule of ``spec.auth`` written out in Python)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD = (
    Path(__file__).resolve().parents[2]
    / "config"
    / "kubernetes"
    / "gateway-api"
    / "routerpolicy-crd.yaml"
)


@functools.cache
def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return loaded


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    (version,) = crd()["spec"]["versions"]
    return jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"])


def router_policy_errors(obj: dict[str, Any]) -> list[str]:
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in _validator().iter_errors(obj)
    ]
    spec = obj.get("spec")
    auth = spec.get("auth") if isinstance(spec, dict) else None
    if (
        isinstance(auth, dict)
        and auth.get("policy") == "public"
        and ("allow" in auth or "deny" in auth)
    ):
        errors.append("spec.auth: a public route cannot have allow/deny rules")
    return errors


def _router_policy(obj: dict[str, Any], errors: list[str]) -> None:
    errors.extend(router_policy_errors(obj))
