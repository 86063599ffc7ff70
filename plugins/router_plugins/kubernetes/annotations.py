"""Per-route settings from ``commons-router.io/…`` Ingress annotations.

Every annotation with our prefix must be known and valid: a typo in, say, an auth plugin
annotation must not leave a route silently unprotected, so any problem disables the routes
of that Ingress (and only those).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from router.api import Route

PREFIX = "commons-router.io/"
PLUGIN_PREFIX = "plugin."


def _scalar(path: tuple[str, ...]) -> Callable[[str], dict[str, Any]]:
    def build(value: str) -> dict[str, Any]:
        result: dict[str, Any] = {path[-1]: value}
        for part in reversed(path[:-1]):
            result = {part: result}
        return result

    return build


def _yaml_mapping(field_name: str) -> Callable[[str], dict[str, Any]]:
    def build(value: str) -> dict[str, Any]:
        return {field_name: _load_mapping(value)}

    return build


def _load_mapping(value: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(value) if value.strip() else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(loaded, dict):
        raise ValueError("expected a YAML/JSON mapping such as {key: value}")
    return loaded


ROUTE_ANNOTATIONS: Mapping[str, Callable[[str], dict[str, Any]]] = {
    "connect-timeout": _scalar(("timeouts", "connect")),
    "read-timeout": _scalar(("timeouts", "read")),
    "timeout": _scalar(("timeouts", "total")),
    "retries": _scalar(("retries",)),
    "max-body-size": _scalar(("max_body_size",)),
    "balancer": _scalar(("balancer",)),
    "strip-prefix": _scalar(("strip_prefix",)),
    "preserve-host": _scalar(("preserve_host",)),
    "websocket": _scalar(("websocket",)),
    "ssl-redirect": _scalar(("https_redirect",)),
    "request-headers": _yaml_mapping("request_headers"),
    "response-headers": _yaml_mapping("response_headers"),
    "path-match": _yaml_mapping("path_match"),
}
"""Annotation (after the prefix) -> the Route fields it sets."""

BACKEND_PROTOCOL = "backend-protocol"
KNOWN = frozenset({*ROUTE_ANNOTATIONS, BACKEND_PROTOCOL})


@dataclass(frozen=True)
class IngressSettings:
    route_fields: dict[str, Any] = field(default_factory=dict)
    """Keyword fields for every Route of the Ingress."""
    scheme: str = "http"


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _check(fields: dict[str, Any]) -> str | None:
    """Validate the fields against the Route model alone; the first message, if any."""
    try:
        Route.model_validate({"name": "check", "builtin": "echo", **fields})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{error['msg']} (at {where})" if where else error["msg"]
    return None


def parse_annotations(annotations: Mapping[str, str]) -> tuple[IngressSettings, list[str]]:
    """The settings our annotations give, and one message per bad annotation."""
    ours = tuple(sorted((k, v) for k, v in annotations.items() if k.startswith(PREFIX)))
    settings, problems = _parse(ours)
    return settings, list(problems)


@functools.lru_cache(maxsize=4096)
def _parse(annotations: tuple[tuple[str, str], ...]) -> tuple[IngressSettings, tuple[str, ...]]:
    # Cached: many Ingresses carry the same annotations, and validating them is not free.
    fields: dict[str, Any] = {}
    scheme = "http"
    problems: list[str] = []
    for full_key, value in annotations:
        key = full_key[len(PREFIX) :]
        try:
            if key == BACKEND_PROTOCOL:
                scheme = value.strip().lower()
                if scheme not in ("http", "https"):
                    raise ValueError("expected 'http' or 'https'")
                continue
            if key.startswith(PLUGIN_PREFIX) and len(key) > len(PLUGIN_PREFIX):
                update = {"plugins": {key[len(PLUGIN_PREFIX) :]: _load_mapping(value)}}
            elif key in ROUTE_ANNOTATIONS:
                update = ROUTE_ANNOTATIONS[key](value)
            else:
                raise ValueError(
                    "unknown annotation; known: "
                    + ", ".join(sorted(KNOWN))
                    + ", plugin.<plugin name>"
                )
            message = _check(update)
            if message is not None:
                raise ValueError(message)
            _merge(fields, update)
        except ValueError as exc:
            problems.append(f"annotation {full_key}: {exc}")
    return IngressSettings(fields, scheme), tuple(problems)
