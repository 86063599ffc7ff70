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
from router.api.original import HeaderFamily, OriginalRequest
from router.http.framing import HostParser
from router.proxy.headers import TrustedPeers
from router.routing.holder import TableHolder
from router.routing.paths import PathError, normalize_target

_METHOD = re.compile(r"[A-Z]{1,20}")


class OriginalRequests:
    """SECURITY: proxies pass most client headers on to the auth request (nginx passes all of
    them), so a client can add headers the proxy does not set. Two families exist: nginx's
    (``X-Original-URI``/``-Method``, host from ``Host``) and Traefik's
    (``X-Forwarded-Uri``/``-Method``/``-Host``). ``family`` reads only the one the proxy
    sets; with ``any`` both are read and must agree where both are present, or the answer
    is 400."""

    __slots__ = (
        "_holder",
        "_hosts",
        "_merge_slashes",
        "_reject_encoded_controls",
        "_reject_encoded_slash",
        "_trusted",
    )

    def __init__(
        self,
        holder: TableHolder,
        trusted: TrustedPeers,
        *,
        merge_slashes: bool,
        reject_encoded_slash: bool,
        reject_encoded_controls: bool,
    ) -> None:
        self._holder = holder
        self._trusted = trusted
        self._hosts = HostParser()
        self._merge_slashes = merge_slashes
        self._reject_encoded_slash = reject_encoded_slash
        self._reject_encoded_controls = reject_encoded_controls

    def resolve(
        self, request: web.BaseRequest, ctx: RequestContext, family: HeaderFamily = "any"
    ) -> OriginalRequest:
        itself = OriginalRequest(request.method, ctx.host, ctx.path, ctx.query, ctx.route, False)
        if not self._trusted.trusts(request.remote or ""):
            return itself
        nginx = family in ("nginx", "any")
        traefik = family in ("traefik", "any")
        uri = _agreed(request, "X-Original-URI", "X-Forwarded-Uri", "URI", nginx, traefik)
        if uri is None:
            return itself
        method = _agreed(
            request, "X-Original-Method", "X-Forwarded-Method", "method", nginx, traefik
        )
        method = method or request.method
        if _METHOD.fullmatch(method) is None:
            raise RouterHTTPError(400, "The forwarded method is not a valid method.")
        host = ctx.host
        forwarded_host = _one(request, "X-Forwarded-Host") if traefik else None
        if forwarded_host is not None:
            parsed = self._hosts.parse(forwarded_host) if "," not in forwarded_host else None
            if parsed is None:
                raise RouterHTTPError(400, "X-Forwarded-Host is not one valid host name.")
            if nginx and _one(request, "X-Original-URI") is not None and parsed != ctx.host:
                # nginx names the host in Host; another X-Forwarded-Host came from the client.
                raise RouterHTTPError(400, "Host and X-Forwarded-Host name different hosts.")
            host = parsed
        try:
            target = normalize_target(
                uri,
                merge_slashes=self._merge_slashes,
                reject_encoded_slash=self._reject_encoded_slash,
                reject_encoded_controls=self._reject_encoded_controls,
            )
            route = self._holder.table.resolve(host, target)
        except PathError as exc:
            raise RouterHTTPError(400, f"Bad forwarded path: {exc}.") from None
        return OriginalRequest(method, host, target.path, target.query, route, True)

    def resolve_prefixed(
        self, request: web.BaseRequest, ctx: RequestContext, prefix: str
    ) -> OriginalRequest | None:
        """Envoy's ``ext_authz`` HTTP check: ``<prefix><original path and query>`` with the
        original method and ``Host``. The target is taken as sent, before this request's own
        normalization, so that dot segments in the original path are resolved inside it."""
        if not self._trusted.trusts(request.remote or ""):
            return None
        raw = request.raw_path
        if not raw.startswith(prefix) or raw[len(prefix) : len(prefix) + 1] != "/":
            raise RouterHTTPError(400, f"The target must be {prefix} followed by a path.")
        try:
            target = normalize_target(
                raw[len(prefix) :],
                merge_slashes=self._merge_slashes,
                reject_encoded_slash=self._reject_encoded_slash,
                reject_encoded_controls=self._reject_encoded_controls,
            )
            route = self._holder.table.resolve(ctx.host, target)
        except PathError as exc:
            raise RouterHTTPError(400, f"Bad original path: {exc}.") from None
        return OriginalRequest(request.method, ctx.host, target.path, target.query, route, True)


def _one(request: web.BaseRequest, name: str) -> str | None:
    values = request.headers.getall(name, ())
    if len(values) > 1:
        raise RouterHTTPError(400, f"{name} was sent more than once.")
    return values[0] if values else None


def _agreed(
    request: web.BaseRequest,
    nginx_name: str,
    traefik_name: str,
    what: str,
    nginx: bool,
    traefik: bool,
) -> str | None:
    first = _one(request, nginx_name) if nginx else None
    second = _one(request, traefik_name) if traefik else None
    if first is not None and second is not None and first != second:
        raise RouterHTTPError(400, f"The forwarded {what} headers disagree.")
    return first if first is not None else second
