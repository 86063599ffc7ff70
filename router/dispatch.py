"""The public listener's request handler: check, normalize, route, run the route's chain,
then count and log the request.

Every exception that is to become an error page goes to one registry
(:class:`~router.errors.ExceptionHandlers`), asked at two points: at the end of the global
plugin chain, so global middleware sees error pages as responses, and around the whole
chain, for what is raised before routing and by global middleware itself. Either way the
request gets the router's page and its access-log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11

from router.api.context import CONTEXT_KEY, RequestContext
from router.api.errors import RouterHTTPError
from router.api.plugin import RESERVED_PREFIXES, Handler
from router.errors import ExceptionHandlers, router_exception_handlers
from router.http.framing import HostParser
from router.observability.accesslog import AccessLog
from router.observability.logs import CURRENT_REQUEST
from router.observability.metrics import OTHER_METHOD, Metrics
from router.proxy.headers import TrustedPeers, joined
from router.proxy.websocket import is_websocket_upgrade
from router.randomness import RANDOM_HEX
from router.routing.compiled import CompiledRoute
from router.routing.holder import TableHolder
from router.routing.paths import PathError, normalize_target
from router.routing.table import MatchFacts

logger = logging.getLogger("commons_router.dispatch")

_PROTOCOL_VERSIONS = {HttpVersion10: "1.0", HttpVersion11: "1.1"}
_REQUEST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def new_request_id() -> str:
    """96 random bits as hex."""
    return RANDOM_HEX.take(12)


class ChainEnd:
    """The end of the global plugin chain: a reserved path or prefix of a plugin, else the
    matched route's own chain. One for every listener, made before the chain around it."""

    __slots__ = ("exception_handlers", "reserved", "reserved_prefixes")

    def __init__(
        self,
        reserved: dict[str, Handler],
        prefixes: dict[str, Handler],
        exception_handlers: ExceptionHandlers,
    ) -> None:
        self.reserved = reserved
        """Exact paths answered by plugins on every host (``/.well-known/commons-router/...``,
        ``/.commons-router/...``), before route matching decides."""
        self.reserved_prefixes = tuple(prefixes.items())
        """Prefixes answered by plugins, matched on the target as sent and on the normalized
        path."""
        self.exception_handlers = exception_handlers

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        ctx = request[CONTEXT_KEY]
        try:
            reserved = self.reserved
            if reserved and ctx.path.startswith("/."):
                handler = reserved.get(ctx.path.partition(";")[0])
                if handler is not None:
                    return await handler(request)
            for prefix, owner in self.reserved_prefixes:
                # SECURITY: the target as sent decides too, so that dot segments after the
                # prefix (``<prefix>/../../admin``) cannot turn a request for the prefix's
                # owner into a routed request, and the normalized path, so that an encoded
                # or dotted spelling of the prefix does not reach a route either.
                if request.raw_path.startswith(prefix) or ctx.path.startswith(prefix):
                    return await owner(request)
            route = ctx.core_route
            if route is None:
                raise RouterHTTPError(404, "No route matches this host and path.")
            return await route.handler(request)
        except Exception as exc:
            return await self.exception_handlers.answer(request, exc)


class Dispatcher:
    __slots__ = (
        "_entry",
        "_hosts",
        "_loop_time",
        "access_log",
        "exception_handlers",
        "holder",
        "hsts",
        "listen_port",
        "listener",
        "log_query",
        "merge_slashes",
        "metrics",
        "mutual_tls",
        "redirect_port",
        "reject_encoded_controls",
        "reject_encoded_slash",
        "scheme",
        "subject_header",
        "track_requests",
        "trusted",
    )

    def __init__(
        self,
        holder: TableHolder,
        entry: Handler,
        *,
        scheme: str,
        trusted: TrustedPeers,
        metrics: Metrics,
        access_log: AccessLog | None,
        merge_slashes: bool,
        reject_encoded_slash: bool,
        reject_encoded_controls: bool = True,
        listener: str = "default",
        hsts: str | None = None,
        redirect_port: int = 443,
        mutual_tls: bool = False,
        subject_header: str | None = None,
        exception_handlers: ExceptionHandlers | None = None,
        log_query: bool = True,
        track_requests: bool = False,
    ) -> None:
        self.holder = holder
        self.log_query = log_query
        self.track_requests = track_requests
        self.listener = listener
        """This listener's name: routes limited to other listeners do not match here."""
        self.listen_port = ""
        """Set once the listener is bound (the real port when asked for port 0)."""
        self.hsts = hsts
        """The Strict-Transport-Security value added to every answer, if any."""
        self.redirect_port = redirect_port
        self.mutual_tls = mutual_tls
        self.subject_header = subject_header
        self.scheme = scheme
        self.trusted = trusted
        self.metrics = metrics
        self.access_log = access_log
        self.merge_slashes = merge_slashes
        self.reject_encoded_slash = reject_encoded_slash
        self.reject_encoded_controls = reject_encoded_controls
        self._hosts = HostParser()
        self.exception_handlers = exception_handlers or router_exception_handlers()
        self._entry = entry
        """The global plugin chain, ending at a :class:`ChainEnd`."""
        self._loop_time = time.perf_counter

    def _request_id(self, request: web.BaseRequest, peer: str) -> str:
        incoming = request.headers.get("X-Request-Id")
        if (
            incoming is not None
            and 0 < len(incoming) <= 128
            and self.trusted.trusts(peer)
            and _REQUEST_ID_CHARS.issuperset(incoming)
        ):
            return incoming
        return new_request_id()

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        start = self._loop_time()
        peer = request.remote or ""
        request_id = self._request_id(request, peer)
        ctx = RequestContext(
            request_id,
            self.trusted.client_address(peer, joined(request.headers, "X-Forwarded-For")),
            self.scheme,
            "",
            start,
        )
        ctx.listen_port = self.listen_port
        if self.mutual_tls:
            self._client_certificate(request, ctx)
        if self.hsts is not None:
            ctx.on_response(self._add_hsts)
        request[CONTEXT_KEY] = ctx
        # Only JSON log lines name the request they were written for.
        current = CURRENT_REQUEST.set(ctx) if self.track_requests else None
        route: CompiledRoute | None = None
        response: web.StreamResponse | None = None
        self.metrics.in_flight += 1
        try:
            response, route = await self._answer(request, ctx)
            if "Upgrade" in request.headers and not is_websocket_upgrade(request.headers):
                # SECURITY: aiohttp discards the bytes that follow a request with an
                # upgrade it does not support (h2c ...) in the same read; the connection
                # must not go on from an unknown position in the byte stream.
                response.force_close()
            return response
        except asyncio.CancelledError:
            # The client went away: log it as nginx does (499), or as 101 for a WebSocket
            # that ended with its connection; aiohttp cleans up.
            self._finish(request, ctx, route or ctx.core_route, None, 101 if ctx.upgraded else 499)
            raise
        finally:
            self.metrics.in_flight -= 1
            if response is not None:
                self._finish(request, ctx, route, response, response.status)
            if current is not None:
                CURRENT_REQUEST.reset(current)

    async def _answer(
        self, request: web.BaseRequest, ctx: RequestContext
    ) -> tuple[web.StreamResponse, CompiledRoute | None]:
        try:
            redirect = self._locate(request, ctx)
            if redirect is not None:
                return redirect, ctx.core_route
            return await self._entry(request), ctx.core_route
        except Exception as exc:
            return await self.exception_handlers.answer(request, exc), ctx.core_route

    def _locate(self, request: web.BaseRequest, ctx: RequestContext) -> web.Response | None:
        """Check the host and target, normalize the path and find the route; the answer
        when the route sends plain HTTP to HTTPS."""
        host = self._hosts.parse(request.headers.get("Host", ""))
        if host is None:
            raise RouterHTTPError(400, "The Host header is not a valid host name.")
        ctx.host = host
        target = request.raw_path
        if not target.startswith("/"):
            target, problem = _origin_form(target, request.headers.get("Host", ""))
            if problem is not None:
                raise RouterHTTPError(400, problem)
        try:
            normalized = normalize_target(
                target,
                merge_slashes=self.merge_slashes,
                reject_encoded_slash=self.reject_encoded_slash,
                reject_encoded_controls=self.reject_encoded_controls,
            )
            table = self.holder.table
            facts = (
                MatchFacts(request.method, request.headers, normalized.query, self.listener)
                if table.conditional
                else None
            )
            if normalized.encoded:
                route = table.resolve(host, normalized, facts)
            else:
                route = table.match(host, normalized.match_path, facts)
        except PathError as exc:
            raise RouterHTTPError(400, f"Bad request path: {exc}.") from None
        ctx.path = normalized.path
        ctx.query = normalized.query
        if route is not None:
            if route.listeners and self.listener not in route.listeners:
                route = None
            elif (
                route.https_redirect
                and self.scheme == "http"
                # The router's own endpoints (forward-auth and ext_authz checks from a
                # gateway on plain HTTP, sign-in) answer for themselves, not for the route.
                and not ctx.path.startswith(RESERVED_PREFIXES)
            ):
                ctx.core_route = route
                return self._https_redirect(ctx)
        ctx.core_route = route
        return None

    def _https_redirect(self, ctx: RequestContext) -> web.Response:
        # The normalized path and the host parsed from Host: nothing unchecked is echoed.
        port = "" if self.redirect_port == 443 else f":{self.redirect_port}"
        query = f"?{ctx.query}" if ctx.query else ""
        location = f"https://{ctx.host}{port}{ctx.path}{query}"
        response = web.Response(status=308, headers={"Location": location})
        response.headers["X-Request-Id"] = ctx.request_id
        return response

    def _client_certificate(self, request: web.BaseRequest, ctx: RequestContext) -> None:
        subject: str | None = getattr(request.protocol, "client_subject", None)
        ctx.client_certificate_subject = subject
        if self.subject_header is not None and subject is not None:
            ctx.add_upstream_header(self.subject_header, subject)

    def _add_hsts(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        assert self.hsts is not None
        response.headers["Strict-Transport-Security"] = self.hsts

    def rejected(self, client: str, status: int, reason: str) -> str:
        """Count and log a request refused before it could be handled (unparsable head,
        ambiguous framing, head timeout); returns its request id."""
        self.metrics.rejected(reason)
        # The method was never read: these count under the label for other methods.
        self.metrics.unmatched.observe(OTHER_METHOD, status, 0.0)
        request_id = new_request_id()
        access_log = self.access_log
        if access_log is not None:
            access_log.write(
                {
                    "time": access_log.timestamp(),
                    "request_id": request_id,
                    "client": client,
                    "method": None,
                    "host": None,
                    "path": None,
                    "route": None,
                    "upstream": None,
                    "status": status,
                    "error": reason,
                    "bytes_in": 0,
                    "bytes_out": 0,
                    "duration_ms": 0.0,
                }
            )
        return request_id

    def _finish(
        self,
        request: web.BaseRequest,
        ctx: RequestContext,
        route: CompiledRoute | None,
        response: web.StreamResponse | None,
        status: int,
    ) -> None:
        duration = self._loop_time() - ctx.start
        bytes_in = request.content_length or 0
        bytes_out = _bytes_out(response)
        (route.metrics if route is not None else self.metrics.unmatched).observe(
            request.method, status, duration, bytes_in, bytes_out
        )
        access_log = self.access_log
        if access_log is None:
            return
        endpoint = ctx.core_endpoint
        record: dict[str, Any] = {
            "time": access_log.timestamp(),
            "request_id": ctx.request_id,
            "client": ctx.client_ip,
            "method": request.method,
            "host": ctx.host,
            "path": ctx.path or request.raw_path.partition("?")[0][:1024],
            "route": route.name if route is not None else None,
            "upstream": endpoint.url if endpoint is not None else None,
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "duration_ms": round(duration * 1000, 3),
            "network.protocol.version": _PROTOCOL_VERSIONS.get(request.version, "other"),
        }
        user_agent = request.headers.get("User-Agent")
        if user_agent is not None:
            record["user_agent.original"] = user_agent[:512]
        if ctx.query and self.log_query:
            record["url.query"] = redacted_query(ctx.query)
        if endpoint is not None:
            # Whole microseconds: int() and a division cost a third of round(x, 3).
            upstream_us = int(ctx.upstream_time * 1e6)
            record["upstream_duration_ms"] = upstream_us / 1000
            record["router_duration_ms"] = max(int(duration * 1e6) - upstream_us, 0) / 1000
            if endpoint.version:
                record["code_version"] = dict(endpoint.version)
        if ctx.resend_count:
            record["http.request.resend_count"] = ctx.resend_count
        if ctx.log_fields:
            record.update(ctx.log_fields)
        access_log.write(record)


def redacted_query(query: str) -> str:
    """The query with every value replaced by ``REDACTED`` (names kept): tokens, codes and
    e-mail addresses travel in query strings and do not belong in a log."""
    parts = []
    for part in query[:2048].split("&"):
        name, sep, _ = part.partition("=")
        parts.append(f"{name}=REDACTED" if sep else name)
    return "&".join(parts)


def _bytes_out(response: web.StreamResponse | None) -> int:
    if response is None:
        return 0
    if response.prepared:
        return response.body_length
    if isinstance(response, web.Response):
        body = response.body
        if isinstance(body, bytes | bytearray):
            return len(body)
    return 0


def _origin_form(target: str, host_header: str) -> tuple[str, str | None]:
    """An absolute-form target is accepted only when its authority is exactly the Host
    header (case aside); the path that follows is then routed as an origin-form target.

    SECURITY: RFC 9112 has a server prefer the target's authority over Host; a router that
    routes by one and forwards the other would let the two disagree, so they must agree.
    """
    if target == "*":
        return "", "The '*' request target is not supported."
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return "", "The request target must be a path starting with '/'."
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    authority, path = rest[:end], rest[end:]
    if not authority or authority.lower() != host_header.strip().lower():
        return "", "An absolute-form request target must name the same host as the Host header."
    return (path if path.startswith("/") else "/" + path), None
