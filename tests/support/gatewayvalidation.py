"""The validation the Gateway API CRDs (standard channel, v1.2) apply, as far as the
router depends on it: required fields, list sizes, enums, hostnames, path values, the CEL
rule that a Service backendRef has a port, and the shape of what the router writes back
(``metav1.Condition`` entries, ``status.parents`` entries with a ``controllerName``)."""

from __future__ import annotations

import re
from typing import Any

from tests.support.routerpolicy import _router_policy

HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CONTROLLER = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/.+$")
CONDITION_STATUS = ("True", "False", "Unknown")
REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def _conditions(conditions: Any, where: str, errors: list[str]) -> None:
    if not isinstance(conditions, list) or len(conditions) > 8:
        errors.append(f"{where}: at most 8 conditions")
        return
    for index, entry in enumerate(conditions):
        at = f"{where}[{index}]"
        for required in ("type", "status", "reason", "message", "lastTransitionTime"):
            if not isinstance(entry.get(required), str):
                errors.append(f"{at}.{required}: Required value")
        if entry.get("status") not in CONDITION_STATUS:
            errors.append(f"{at}.status: Unsupported value")
        if isinstance(entry.get("reason"), str) and not REASON.match(entry["reason"]):
            errors.append(f"{at}.reason: Invalid value")
        generation = entry.get("observedGeneration", 0)
        if not isinstance(generation, int) or generation < 0:
            errors.append(f"{at}.observedGeneration: Invalid value")


def _gateway_class(obj: dict[str, Any], errors: list[str]) -> None:
    controller = (obj.get("spec") or {}).get("controllerName")
    if not isinstance(controller, str) or not CONTROLLER.match(controller):
        errors.append("spec.controllerName: Invalid value: must be DOMAIN/PATH")
    if "status" in obj:
        _conditions(obj["status"].get("conditions", []), "status.conditions", errors)


def _gateway(obj: dict[str, Any], errors: list[str]) -> None:
    spec = obj.get("spec") or {}
    if not spec.get("gatewayClassName"):
        errors.append("spec.gatewayClassName: Required value")
    listeners = spec.get("listeners")
    if not isinstance(listeners, list) or not 1 <= len(listeners) <= 64:
        errors.append("spec.listeners: must have 1 to 64 items")
        listeners = []
    names = [listener.get("name") for listener in listeners]
    if len(set(names)) != len(names):
        errors.append("spec.listeners: Listener name must be unique within the Gateway")
    for index, listener in enumerate(listeners):
        at = f"spec.listeners[{index}]"
        if not listener.get("name") or not listener.get("protocol"):
            errors.append(f"{at}: name and protocol are required")
        port = listener.get("port")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            errors.append(f"{at}.port: Invalid value")
        hostname = listener.get("hostname")
        if hostname is not None and not HOSTNAME.match(str(hostname)):
            errors.append(f"{at}.hostname: Invalid value")
        if listener.get("protocol") == "HTTPS" and not listener.get("tls"):
            errors.append(f"{at}.tls: tls must be specified for protocols ['HTTPS', 'TLS']")
        if listener.get("protocol") == "HTTP" and listener.get("tls"):
            errors.append(
                f"{at}.tls: tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"
            )
        allowed_from = ((listener.get("allowedRoutes") or {}).get("namespaces") or {}).get("from")
        if allowed_from not in (None, "All", "Same", "Selector"):
            errors.append(f"{at}.allowedRoutes.namespaces.from: Unsupported value")
    status = obj.get("status")
    if status is not None:
        _conditions(status.get("conditions", []), "status.conditions", errors)
        for index, address in enumerate(status.get("addresses") or []):
            if address.get("type", "IPAddress") not in ("IPAddress", "Hostname") or not address.get(
                "value"
            ):
                errors.append(f"status.addresses[{index}]: Invalid value")
        for index, entry in enumerate(status.get("listeners") or []):
            at = f"status.listeners[{index}]"
            if not isinstance(entry.get("attachedRoutes"), int) or "supportedKinds" not in entry:
                errors.append(f"{at}: attachedRoutes and supportedKinds are required")
            _conditions(entry.get("conditions"), f"{at}.conditions", errors)


def _http_route(obj: dict[str, Any], errors: list[str]) -> None:
    spec = obj.get("spec") or {}
    for index, parent in enumerate(spec.get("parentRefs") or []):
        if not parent.get("name"):
            errors.append(f"spec.parentRefs[{index}].name: Required value")
    for index, hostname in enumerate(spec.get("hostnames") or []):
        if not HOSTNAME.match(str(hostname)):
            errors.append(f"spec.hostnames[{index}]: Invalid value")
    rules = spec.get("rules") or []
    if len(rules) > 16:
        errors.append("spec.rules: must have at most 16 items")
    for rule_index, rule in enumerate(rules):
        for match_index, match in enumerate(rule.get("matches") or []):
            path = match.get("path") or {}
            value = path.get("value", "/")
            if path.get("type", "PathPrefix") not in ("Exact", "PathPrefix", "RegularExpression"):
                errors.append(f"spec.rules[{rule_index}].matches[{match_index}].path.type")
            if not str(value).startswith("/") or "//" in str(value):
                errors.append(
                    f"spec.rules[{rule_index}].matches[{match_index}].path.value: "
                    "must be an absolute path"
                )
        for ref_index, ref in enumerate(rule.get("backendRefs") or []):
            at = f"spec.rules[{rule_index}].backendRefs[{ref_index}]"
            if not ref.get("name"):
                errors.append(f"{at}.name: Required value")
            is_service = ref.get("group", "") == "" and ref.get("kind", "Service") == "Service"
            if is_service and "port" not in ref:
                errors.append(f"{at}: Must have port for Service reference")
            weight = ref.get("weight", 1)
            if not isinstance(weight, int) or not 0 <= weight <= 1000000:
                errors.append(f"{at}.weight: Invalid value")
    status = obj.get("status")
    if status is not None:
        parents = status.get("parents")
        if not isinstance(parents, list) or len(parents) > 32:
            errors.append("status.parents: Required value (at most 32)")
            parents = []
        for index, entry in enumerate(parents):
            at = f"status.parents[{index}]"
            if not (entry.get("parentRef") or {}).get("name"):
                errors.append(f"{at}.parentRef.name: Required value")
            if not CONTROLLER.match(str(entry.get("controllerName", ""))):
                errors.append(f"{at}.controllerName: Invalid value")
            _conditions(entry.get("conditions"), f"{at}.conditions", errors)


def _reference_grant(obj: dict[str, Any], errors: list[str]) -> None:
    spec = obj.get("spec") or {}
    for side in ("from", "to"):
        entries = spec.get(side)
        if not isinstance(entries, list) or not 1 <= len(entries) <= 16:
            errors.append(f"spec.{side}: must have 1 to 16 items")
            continue
        for index, entry in enumerate(entries):
            if "group" not in entry or not entry.get("kind"):
                errors.append(f"spec.{side}[{index}]: group and kind are required")
            if side == "from" and not entry.get("namespace"):
                errors.append(f"spec.from[{index}].namespace: Required value")


GATEWAY_KINDS = {
    "GatewayClass": _gateway_class,
    "Gateway": _gateway,
    "HTTPRoute": _http_route,
    "ReferenceGrant": _reference_grant,
    "RouterPolicy": _router_policy,
}
