"""Forward one request to an upstream endpoint and stream the answer back.

HTTP requests and WebSocket upgrades take the same path: endpoint choice, connect timeout,
passive health, retries to another endpoint and upstream observers; only what happens
once the endpoint answered differs (a response relayed, or a tunnel: proxy/websocket.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from multidict import CIMultiDict

from router.api.context import CONTEXT_KEY, RequestContext
from router.api.errors import RouterHTTPError
from router.api.plugin import UpstreamObserver
from router.observability.metrics import Metrics
from router.proxy.body import BodyLimits, BodyReader, BodyTooLarge, ClientBodyError
from router.proxy.client import UpstreamClient
from router.proxy.connection import UpstreamResponse
from router.proxy.headers import HeaderPolicy, TrustedPeers, forwarded_element, joined
from router.proxy.tunnel import UpstreamTunnel
from router.proxy.upstream import EndpointState
from router.proxy.websocket import expected_accept, is_websocket_upgrade, relay, switched
from router.proxy.wire import (
    ConnectFailed,
    Disconnected,
    InvalidRequest,
    RequestBodyFailed,
    UpstreamError,
)
from router.routing.compiled import CompiledRoute

logger = logging.getLogger("commons_router.proxy")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
SMALL_BODY = 64 * 1024
"""Response bodies up to this size (with a known length) are read whole: fewer writes."""


class _AttemptFailed(Exception):
    def __init__(self, kind: str, status: int, message: str, retryable: bool, cause: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        """For the client: names the route and what happened."""
        self.retryable = retryable
        self.cause = cause
        """For the log: names the endpoint and what happened."""


class Forwarder:
    """The terminal handler of every upstream route."""

    def __init__(
        self,
        client: UpstreamClient,
        policy: HeaderPolicy,
        trusted: TrustedPeers,
        metrics: Metrics,
        observers: tuple[UpstreamObserver, ...] = (),
        body_limits: BodyLimits | None = None,
        detailed_errors: bool = False,
    ) -> None:
        self.client = client
        self.policy = policy
        self.trusted = trusted
        self.metrics = metrics
        self.observers = observers
        self._loop: asyncio.AbstractEventLoop | None = None
        """Cached: ``asyncio.get_running_loop()`` costs a ``getpid()`` system call."""
        self.body_limits = body_limits or BodyLimits(
            idle_timeout=30.0, buffer_size=1024 * 1024, min_rate=0, rate_grace=0.0
        )
        self.detailed_errors = detailed_errors
        """Error pages say which endpoint failed and how (dev mode); otherwise they name
        the route and what happened, never an internal address."""

    def upstream_headers(
        self, request: web.BaseRequest, ctx: RequestContext, route: CompiledRoute
    ) -> CIMultiDict[str]:
        incoming = request.headers
        peer = request.remote or ""
        trusted = self.trusted.trusts(peer)
        headers = self.policy.upstream_headers(
            incoming, keep_host=route.keep_host, remove=route.request_remove, trusted=trusted
        )
        host = incoming.get("Host", "")
        if trusted:
            prior_for = joined(incoming, "X-Forwarded-For")
            headers["X-Forwarded-For"] = f"{prior_for}, {peer}" if prior_for else peer
            headers["X-Forwarded-Proto"] = incoming.get("X-Forwarded-Proto", ctx.scheme)
            headers["X-Forwarded-Host"] = incoming.get("X-Forwarded-Host", host)
            headers["X-Forwarded-Port"] = incoming.get("X-Forwarded-Port", ctx.listen_port)
            prior = joined(incoming, "Forwarded")
            element = forwarded_element(peer, host, ctx.scheme)
            headers["Forwarded"] = f"{prior}, {element}" if prior else element
        else:
            headers["X-Forwarded-For"] = peer
            headers["X-Forwarded-Proto"] = ctx.scheme
            headers["X-Forwarded-Host"] = host
            headers["X-Forwarded-Port"] = ctx.listen_port
            headers["Forwarded"] = forwarded_element(peer, host, ctx.scheme)
        if route.strip_prefix:
            headers["X-Forwarded-Prefix"] = route.strip_prefix
        headers["X-Request-Id"] = ctx.request_id
        for name, value in route.request_set:
            headers[name] = value
        for name, value in route.request_add:
            headers.add(name, value)
        if ctx.upstream_headers:
            for name, extra in ctx.upstream_headers.items():
                if extra is None:
                    headers.popall(name, None)
                else:
                    headers[name] = extra
        return headers

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        ctx = request[CONTEXT_KEY]
        route = ctx.core_route
        assert route is not None and route.pool is not None
        # Set for a WebSocket upgrade: the Sec-WebSocket-Accept the client expects.
        accept: str | None = None
        if route.websocket and is_websocket_upgrade(request.headers):
            accept = expected_accept(request)
        headers = self.upstream_headers(request, ctx, route)
        if accept is not None:
            headers["Connection"] = "Upgrade"
            headers["Upgrade"] = "websocket"
        path_qs = route.upstream_path(ctx.path)
        if ctx.query:
            path_qs = f"{path_qs}?{ctx.query}"

        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        body: bytes | AsyncIterator[bytes] | None = None
        if request.body_exists:
            length = request.content_length
            if length is not None and length > route.max_body_size:
                ctx.add_log_field("error", BodyTooLarge.kind)
                raise RouterHTTPError(413, _too_large(route), close_connection=True)
            reader = BodyReader(request, route.max_body_size, self.body_limits, loop)
            try:
                body = await reader.buffered()
            except ClientBodyError as exc:
                raise _body_error(exc, ctx, route) from None
        replayable = body is None or isinstance(body, bytes)
        may_retry = replayable and request.method in IDEMPOTENT_METHODS

        pool = route.pool
        tried: EndpointState | None = None
        attempts = 1 + (route.retries if may_retry else 0)
        failure: _AttemptFailed | None = None
        for attempt in range(attempts):
            endpoint = pool.pick(loop.time(), exclude=tried)
            if endpoint is None:
                if failure is not None:
                    break
                ctx.add_log_field("error", "no_endpoint")
                raise RouterHTTPError(
                    503, f"No healthy upstream endpoint is available for route {route.name!r}."
                )
            if endpoint.invalid:
                ctx.add_log_field("error", "invalid_backend")
                raise RouterHTTPError(500, f"The backend of route {route.name!r} is not valid.")
            ctx.core_endpoint = endpoint
            ctx.resend_count = attempt
            try:
                return await self._attempt(
                    request, ctx, route, endpoint, path_qs, headers, body, may_retry, accept
                )
            except _AttemptFailed as exc:
                failure = exc
                endpoint.failed_attempts += 1
                route.metrics.upstream_error(exc.kind)
                ctx.add_log_field("error", exc.kind)
                logger.warning(
                    "route %s: upstream %s failed (%s): %s",
                    route.name,
                    endpoint.url,
                    exc.kind,
                    exc.cause,
                )
                if pool.record_failure(endpoint, loop.time()):
                    self.metrics.ejections += 1
                    logger.warning(
                        "endpoint %s ejected from route %s after repeated failures",
                        endpoint.url,
                        route.name,
                    )
                if not exc.retryable:
                    break
                tried = endpoint
        assert failure is not None
        raise RouterHTTPError(failure.status, failure.message)

    async def _attempt(
        self,
        request: web.BaseRequest,
        ctx: RequestContext,
        route: CompiledRoute,
        endpoint: EndpointState,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterator[bytes] | None,
        may_resend: bool,
        accept: str | None,
    ) -> web.StreamResponse:
        endpoint.outstanding += 1
        endpoint.attempts += 1
        observed = (
            [(o, o.attempt_started(request, endpoint.url, headers)) for o in self.observers]
            if self.observers
            else None
        )
        status: int | None = None
        error: str | None = None
        upstream: UpstreamResponse | UpstreamTunnel
        loop = self._loop
        assert loop is not None
        started = loop.time()
        try:
            try:
                if accept is None:
                    upstream = await self.client.request(
                        endpoint.address,
                        request.method,
                        endpoint.prefix + path_qs,
                        headers.items(),
                        body,
                        route.timeouts,
                        has_host=route.keep_host and "Host" in headers,
                        has_length="Content-Length" in headers,
                        may_resend=may_resend,
                    )
                else:
                    upstream = await self.client.upgrade(
                        endpoint.address,
                        endpoint.prefix + path_qs,
                        headers.items(),
                        route.timeouts,
                        has_host=route.keep_host and "Host" in headers,
                    )
            except ConnectFailed as exc:
                error = "connect"
                raise _AttemptFailed(
                    "connect",
                    502,
                    f"The upstream of route {route.name!r} could not be reached "
                    f"({self._detail(exc)}).",
                    retryable=True,
                    cause=str(exc),
                ) from None
            except Disconnected as exc:
                # Connected and sent, then the endpoint closed or reset the connection.
                error = "reset"
                raise _AttemptFailed(
                    "reset",
                    502,
                    f"The upstream of route {route.name!r} could not be reached "
                    f"({self._detail(exc)}).",
                    retryable=True,
                    cause=str(exc),
                ) from None
            except TimeoutError:
                error = "timeout"
                raise _AttemptFailed(
                    "timeout",
                    504,
                    f"The upstream of route {route.name!r} did not answer in time.",
                    retryable=False,
                    cause="no answer in time",
                ) from None
            except RequestBodyFailed as exc:
                body_error = exc.__cause__
                if not isinstance(body_error, ClientBodyError):
                    body_error = ClientBodyError()
                error = body_error.kind
                raise _body_error(body_error, ctx, route) from None
            except InvalidRequest as exc:
                error = "request"
                logger.warning("request on route %s not forwarded: %s", route.name, exc)
                raise RouterHTTPError(
                    500, f"The request could not be forwarded on route {route.name!r}."
                ) from None
            except UpstreamError as exc:
                error = "protocol"
                raise _AttemptFailed(
                    "protocol",
                    502,
                    f"The upstream of route {route.name!r} sent an invalid response "
                    f"({self._detail(exc)}).",
                    retryable=False,
                    cause=str(exc),
                ) from None
            finally:
                ctx.upstream_time += loop.time() - started
            status = upstream.status
            route.pool.record_success(endpoint)  # type: ignore[union-attr]
            if isinstance(upstream, UpstreamTunnel):
                assert accept is not None
                if not switched(upstream, accept):
                    error = "websocket"
                    upstream.abort()
                    route.metrics.upstream_error("websocket")
                    ctx.add_log_field("error", "websocket")
                    raise RouterHTTPError(
                        502,
                        f"The upstream of route {route.name!r} refused the WebSocket upgrade "
                        f"(status {upstream.status}).",
                    )
                try:
                    return await self._switch(request, ctx, route, upstream)
                finally:
                    upstream.close()
            try:
                return await self._relay(request, ctx, route, upstream)
            finally:
                upstream.release()
        finally:
            endpoint.outstanding -= 1
            if observed is not None:
                for observer, token in observed:
                    observer.attempt_finished(token, status, error)

    def _response_headers(
        self,
        response: web.StreamResponse,
        ctx: RequestContext,
        route: CompiledRoute,
        upstream: UpstreamResponse | UpstreamTunnel,
    ) -> None:
        headers = response.headers
        self.policy.copy_downstream(
            upstream.headers, upstream.connection, headers, route.response_remove
        )
        for name, value in route.response_set:
            headers[name] = value
        for name, value in route.response_add:
            headers.add(name, value)
        headers["X-Request-Id"] = ctx.request_id

    async def _switch(
        self,
        request: web.BaseRequest,
        ctx: RequestContext,
        route: CompiledRoute,
        tunnel: UpstreamTunnel,
    ) -> web.StreamResponse:
        """Accept the client's upgrade (the endpoint did) and relay until either side ends."""
        response = web.StreamResponse(status=101, reason="Switching Protocols")
        self._response_headers(response, ctx, route, tunnel)
        response.headers["Upgrade"] = "websocket"
        response.headers["Connection"] = "Upgrade"
        response.force_close()
        await response.prepare(request)
        ctx.upgraded = True
        await relay(request, response, tunnel)
        return response

    async def _relay(
        self,
        request: web.BaseRequest,
        ctx: RequestContext,
        route: CompiledRoute,
        upstream: UpstreamResponse,
    ) -> web.StreamResponse:
        status = upstream.status
        length = upstream.content_length
        no_body = request.method == "HEAD" or status in (204, 304)
        if not no_body and length is not None and length <= SMALL_BODY:
            loop = self._loop
            assert loop is not None
            started = loop.time()
            try:
                payload = await upstream.read()
            except (UpstreamError, TimeoutError) as exc:
                route.metrics.upstream_error("body")
                self._log_body_failure(ctx, route, exc)
                raise RouterHTTPError(
                    502,
                    f"The upstream of route {route.name!r} broke off its answer "
                    f"({self._detail(exc)}).",
                ) from None
            finally:
                ctx.upstream_time += loop.time() - started
            # Headers go straight into the response's own multidict (headers= would copy).
            small = web.Response(status=status, reason=upstream.reason, body=payload)
            self._response_headers(small, ctx, route, upstream)
            return small

        response = web.StreamResponse(status=status, reason=upstream.reason)
        self._response_headers(response, ctx, route, upstream)
        await response.prepare(request)
        if no_body:
            await response.write_eof()
            return response
        try:
            while chunk := await upstream.next_chunk():
                await response.write(chunk)
        except (UpstreamError, TimeoutError) as exc:
            # Headers are out: the only honest signal left is to cut the connection, so
            # the client sees a truncated response rather than a complete-looking one.
            route.metrics.upstream_error("body")
            self._log_body_failure(ctx, route, exc)
            _abort(request)
            return response
        await response.write_eof()
        return response

    def _detail(self, exc: BaseException) -> str:
        """What happened, for an error page: in full in dev mode, else without addresses."""
        if self.detailed_errors:
            return _reason(exc)
        if isinstance(exc, UpstreamError):
            return exc.summary
        return "it did not answer in time" if isinstance(exc, TimeoutError) else "it failed"

    def _log_body_failure(
        self, ctx: RequestContext, route: CompiledRoute, exc: BaseException
    ) -> None:
        ctx.add_log_field("error", "body")
        endpoint = ctx.core_endpoint
        logger.warning(
            "route %s: upstream %s broke off its answer (body): %s",
            route.name,
            endpoint.url if endpoint is not None else None,
            _reason(exc),
        )


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _body_error(
    error: ClientBodyError, ctx: RequestContext, route: CompiledRoute
) -> RouterHTTPError:
    ctx.add_log_field("error", error.kind)
    message = _too_large(route) if isinstance(error, BodyTooLarge) else error.message
    # The rest of the body may still be on its way: do not keep this connection.
    return RouterHTTPError(error.status, message, close_connection=True)


def _too_large(route: CompiledRoute) -> str:
    return f"The request body exceeds the {route.max_body_size}-byte limit of this route."


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
