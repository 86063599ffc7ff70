"""Span attributes: the stable HTTP semantic conventions and the endpoint's code version."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from aiohttp import web

from router.api import RequestContext

KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)

CODE_VERSION_ATTRIBUTES = {
    "repository": "vcs.repository.url.full",
    "commit": "vcs.ref.head.revision",
    "image": "container.image.name",
    "image_digest": "container.image.id",
    "pod": "k8s.pod.name",
    "namespace": "k8s.namespace.name",
    "node": "k8s.node.name",
}
"""Endpoint version fields with a semantic-convention name; others go under
``commons_router.code.<field>``."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def method_attributes(method: str) -> dict[str, str]:
    if method in KNOWN_METHODS:
        return {"http.request.method": method}
    return {"http.request.method": "_OTHER", "http.request.method_original": method}


class CodeVersionAttributes:
    """Span attributes of an endpoint version map, built once per map object."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Mapping[str, str], Mapping[str, Any]]] = {}

    def of(self, version: Mapping[str, str] | None) -> Mapping[str, Any]:
        if not version:
            return _EMPTY
        entry = self._cache.get(id(version))
        if entry is not None and entry[0] is version:
            return entry[1]
        attributes = {
            CODE_VERSION_ATTRIBUTES.get(key, f"commons_router.code.{key}"): value
            for key, value in version.items()
        }
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[id(version)] = (version, attributes)
        return attributes


def server_attributes(
    request: web.BaseRequest, ctx: RequestContext, record_query: bool
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        **method_attributes(request.method),
        "url.path": ctx.path,
        "url.scheme": ctx.scheme,
        "server.address": ctx.host,
        "client.address": ctx.client_ip,
        "network.peer.address": request.remote or "",
        "commons_router.request_id": ctx.request_id,
    }
    host = request.headers.get("Host", "")
    port = host.rpartition(":")[2] if not host.endswith("]") else ""
    if port.isdigit():
        attributes["server.port"] = int(port)
    user_agent = request.headers.get("User-Agent")
    if user_agent:
        attributes["user_agent.original"] = user_agent
    if record_query and ctx.query:
        attributes["url.query"] = ctx.query
    route = ctx.route
    if route is not None:
        attributes["http.route"] = route.path
        attributes["commons_router.route"] = route.name
    return attributes
