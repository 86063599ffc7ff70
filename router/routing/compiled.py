"""A route ready to serve: its spec plus everything precomputed for the hot path."""

from __future__ import annotations

from collections.abc import Sequence

from router.api.plugin import Handler
from router.config.models import Route
from router.observability.metrics import RouteMetrics
from router.proxy.headers import canonical_header
from router.proxy.upstream import EndpointState, UpstreamPool
from router.proxy.wire import UpstreamTimeouts


class CompiledRoute:
    __slots__ = (
        "handler",
        "https_redirect",
        "keep_host",
        "listeners",
        "max_body_size",
        "metrics",
        "name",
        "plugins",
        "pool",
        "request_add",
        "request_remove",
        "request_set",
        "response_add",
        "response_remove",
        "response_set",
        "retries",
        "rewrite_full",
        "rewrite_prefix",
        "spec",
        "strip_prefix",
        "timeouts",
        "websocket",
    )

    def __init__(
        self,
        spec: Route,
        *,
        pool: UpstreamPool | None,
        metrics: RouteMetrics,
        default_max_body: int,
        plugins: tuple[str, ...],
        handler: Handler,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.pool = pool
        self.metrics = metrics
        self.plugins = plugins
        """The plugins whose middleware runs on this route, outermost first."""
        self.max_body_size = (
            spec.max_body_size if spec.max_body_size is not None else default_max_body
        )
        self.strip_prefix = (
            spec.path.rstrip("/") if spec.strip_prefix and spec.path_type == "Prefix" else ""
        )
        rewrite = spec.rewrite
        self.rewrite_full = rewrite.full_path if rewrite is not None else None
        self.rewrite_prefix = (
            (spec.path.rstrip("/"), rewrite.prefix.rstrip("/"))
            if rewrite is not None and rewrite.prefix is not None
            else None
        )
        """(matched prefix, its replacement), both without a final ``/``."""
        self.keep_host = spec.preserve_host
        self.retries = spec.retries
        self.websocket = spec.websocket
        self.listeners = frozenset(spec.listeners)
        """Empty: every listener."""
        self.https_redirect = spec.https_redirect
        self.timeouts = UpstreamTimeouts(
            connect=spec.timeouts.connect, read=spec.timeouts.read, total=spec.timeouts.total
        )
        self.request_remove = frozenset(
            canonical_header(name) for name in spec.request_headers.remove
        )
        self.request_set = tuple(spec.request_headers.set.items())
        self.request_add = tuple(spec.request_headers.add.items())
        self.response_remove = frozenset(
            canonical_header(name) for name in spec.response_headers.remove
        )
        self.response_set = tuple(spec.response_headers.set.items())
        self.response_add = tuple(spec.response_headers.add.items())
        self.handler = handler
        """The plugin chain ending at the upstream (or the route's builtin)."""

    # The read-only view plugins get (router.api.RouteView).
    @property
    def hosts(self) -> Sequence[str]:
        return self.spec.hosts

    @property
    def path(self) -> str:
        return self.spec.path

    @property
    def path_type(self) -> str:
        return self.spec.path_type

    @property
    def endpoints(self) -> Sequence[EndpointState]:
        return self.pool.endpoints if self.pool is not None else ()

    def upstream_path(self, path: str) -> str:
        """The path to send upstream: ``path`` with the route prefix stripped or
        rewritten if asked."""
        if self.rewrite_full is not None:
            return self.rewrite_full
        if self.rewrite_prefix is not None:
            return replace_prefix(path, *self.rewrite_prefix)
        prefix = self.strip_prefix
        if not prefix:
            return path
        if path[: len(prefix)].lower() != prefix.lower():
            return path  # matched only once decoded (path_match): nothing to strip as sent
        rest = path[len(prefix) :]
        return rest if rest.startswith("/") else "/" + rest


def replace_prefix(path: str, prefix: str, replacement: str) -> str:
    """``path`` with its leading ``prefix`` (element-wise, no final ``/``) replaced."""
    if path[: len(prefix)].lower() != prefix.lower():
        return path  # matched only once decoded (path_match): nothing to replace as sent
    rest = path[len(prefix) :]
    if not replacement:
        return rest if rest.startswith("/") else "/" + rest
    return replacement + rest if rest.startswith("/") or not rest else replacement + "/" + rest
