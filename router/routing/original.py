"""Forward-auth requests (nginx ``auth_request``, Traefik ForwardAuth) name the request they
ask about in headers; this finds the route that request would take, judged exactly like a
direct request: same host parsing, same path normalization, same route table.

SECURITY: only a trusted proxy may name another request. From anyone else the headers are
ignored and the request describes itself, so a client cannot pick a weaker route's policy.
"""

from __future__ import annotations

import re

from aiohttp import web

from router.api.context import RequestContext
from router.api.errors import RouterHTTPError
from router.api.original import OriginalRequest
from router.dispatch import TableHolder
from router.http.framing import HostParser
from router.proxy.headers import TrustedPeers
from router.routing.paths import PathError, normalize_target

_METHOD = re.compile(r"[A-Z]{1,20}")
# Traefik ForwardAuth first, then nginx's conventional auth_request headers.
_URI_HEADERS = ("X-Forwarded-Uri", "X-Original-URI")
_METHOD_HEADERS = ("X-Forwarded-Method", "X-Original-Method")


class OriginalRequests:
    __slots__ = ("_holder", "_hosts", "_merge_slashes", "_reject_encoded_slash", "_trusted")

    def __init__(
        self,
        holder: TableHolder,
        trusted: TrustedPeers,
        *,
        merge_slashes: bool,
        reject_encoded_slash: bool,
    ) -> None:
        self._holder = holder
        self._trusted = trusted
        self._hosts = HostParser()
        self._merge_slashes = merge_slashes
        self._reject_encoded_slash = reject_encoded_slash

    def resolve(self, request: web.BaseRequest, ctx: RequestContext) -> OriginalRequest:
        itself = OriginalRequest(request.method, ctx.host, ctx.path, ctx.query, ctx.route, False)
        if not self._trusted.trusts(request.remote or ""):
            return itself
        headers = request.headers
        uri = _first(request, _URI_HEADERS)
        if uri is None:
            return itself
        method = _first(request, _METHOD_HEADERS) or request.method
        if _METHOD.fullmatch(method) is None:
            raise RouterHTTPError(400, "The forwarded method is not a valid method.")
        host = ctx.host
        forwarded_host = headers.get("X-Forwarded-Host")
        if forwarded_host is not None:
            parsed = self._hosts.parse(forwarded_host) if "," not in forwarded_host else None
            if parsed is None:
                raise RouterHTTPError(400, "X-Forwarded-Host is not one valid host name.")
            host = parsed
        try:
            target = normalize_target(
                uri,
                merge_slashes=self._merge_slashes,
                reject_encoded_slash=self._reject_encoded_slash,
            )
        except PathError as exc:
            raise RouterHTTPError(400, f"Bad forwarded path: {exc}.") from None
        route = self._holder.table.match(host, target.match_path)
        return OriginalRequest(method, host, target.path, target.query, route, True)


def _first(request: web.BaseRequest, names: tuple[str, ...]) -> str | None:
    for name in names:
        values = request.headers.getall(name, ())
        if len(values) > 1:
            raise RouterHTTPError(400, f"{name} was sent more than once.")
        if values:
            return values[0]
    return None
