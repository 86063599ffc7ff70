"""Per-request state shared by the core and plugins."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.api.views import EndpointView, RouteView

if TYPE_CHECKING:
    from router.proxy.upstream import EndpointState
    from router.routing.compiled import CompiledRoute


ResponseHook = Callable[[web.BaseRequest, web.StreamResponse], None]


class RequestContext:
    """What the router knows about one request. Reach it with :func:`context_of`."""

    __slots__ = (
        "client_certificate_subject",
        "client_ip",
        "core_endpoint",
        "core_route",
        "host",
        "listen_port",
        "log_fields",
        "path",
        "query",
        "request_id",
        "resend_count",
        "response_hooks",
        "scheme",
        "start",
        "upgraded",
        "upstream_headers",
        "upstream_time",
    )

    def __init__(
        self, request_id: str, client_ip: str, scheme: str, host: str, start: float
    ) -> None:
        self.request_id = request_id
        self.client_ip = client_ip
        self.scheme = scheme
        self.host = host
        self.start = start
        self.path = ""
        """Normalized path, as forwarded (before any prefix stripping)."""
        self.query = ""
        self.core_route: CompiledRoute | None = None
        """The matched route as the core uses it; plugins read :attr:`route`."""
        self.core_endpoint: EndpointState | None = None
        """The endpoint chosen, as the core uses it; plugins read :attr:`endpoint`."""
        self.log_fields: dict[str, Any] | None = None
        self.upstream_headers: dict[str, str | None] | None = None
        self.response_hooks: list[ResponseHook] | None = None
        self.upgraded = False
        """True once the connection was switched to another protocol (WebSocket)."""
        self.upstream_time = 0.0
        """Seconds spent waiting for upstream endpoints (all attempts)."""
        self.resend_count = 0
        """Attempts after the first (retries on another endpoint)."""
        self.listen_port = ""
        """The port of the listener the request came in on."""
        self.client_certificate_subject: str | None = None
        """Subject (RFC 4514) of the client certificate, verified against the listener's CA
        bundle; None without mutual TLS or when the client sent none."""

    @property
    def route(self) -> RouteView | None:
        """The route this request matched (None: no route), read-only."""
        return self.core_route

    @property
    def endpoint(self) -> EndpointView | None:
        """The endpoint that answered (None until one was chosen), read-only."""
        return self.core_endpoint

    def add_log_field(self, name: str, value: Any) -> None:
        """Add a field to this request's access-log line (e.g. ``user``, ``trace_id``)."""
        if self.log_fields is None:
            self.log_fields = {}
        self.log_fields[name] = value

    def on_response(self, hook: ResponseHook) -> None:
        """Call ``hook(request, response)`` just before the response headers are sent.

        Every response passes through it: proxied (streamed or not), WebSocket upgrades,
        error pages and plugin answers. Hooks may change status-independent headers.
        """
        if self.response_hooks is None:
            self.response_hooks = []
        self.response_hooks.append(hook)

    def add_upstream_header(self, name: str, value: str) -> None:
        """Set a header on the request sent upstream (after client headers were cleaned)."""
        if self.upstream_headers is None:
            self.upstream_headers = {}
        self.upstream_headers[name] = value

    def add_upstream_headers(self, headers: Mapping[str, str | None]) -> None:
        """Set several upstream headers at once (``None`` drops the client's)."""
        if self.upstream_headers is None:
            self.upstream_headers = dict(headers)
        else:
            self.upstream_headers.update(headers)

    def remove_upstream_header(self, name: str) -> None:
        """Do not send the client's ``name`` header upstream (e.g. ``Authorization``)."""
        if self.upstream_headers is None:
            self.upstream_headers = {}
        self.upstream_headers[name] = None


CONTEXT_KEY: web.RequestKey[RequestContext] = web.RequestKey(
    "commons_router_context", RequestContext
)


def context_of(request: web.BaseRequest) -> RequestContext:
    return request[CONTEXT_KEY]
