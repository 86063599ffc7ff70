"""The plugin contract.

A plugin is a class registered under the ``commons_router.plugins`` entry-point group. It
has a name, a config model validated at load, a lifecycle (``start``/``stop``), and may add
request middleware (per route), route providers, services for other plugins, and
access-log fields (through :class:`~router.api.context.RequestContext`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from aiohttp import ClientSession, web
from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict

from router.api.context import RequestContext, context_of
from router.api.contributions import DevOptions, DevPreset, SignedStatementProfile
from router.api.original import HeaderFamily, OriginalRequest
from router.api.provider import Provider
from router.config.models import Config, Route
from router.observability.metrics import LabeledCounter, Metrics

RESERVED_PREFIXES = ("/.well-known/commons-router/", "/.commons-router/")
"""Where the paths and prefixes plugins reserve live: the router's own, on every host."""

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
"""Answers a request: the next plugin's middleware, or the route's upstream."""

Middleware = Callable[[web.BaseRequest, Handler], Awaitable[web.StreamResponse]]
"""``(request, handler) -> response``, the aiohttp middleware shape."""

OriginalResolver = Callable[[web.BaseRequest, RequestContext, HeaderFamily], OriginalRequest]
PrefixedResolver = Callable[[web.BaseRequest, RequestContext, str], OriginalRequest | None]

T = TypeVar("T")


class NoConfig(BaseModel):
    """For plugins that take no settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceKey(Generic[T]):
    """A typed name for an object one plugin provides to others (e.g. a session store)."""

    __slots__ = ("name", "type")

    def __init__(self, name: str, type_: type[T]) -> None:
        self.name = name
        self.type = type_

    def __repr__(self) -> str:
        return f"ServiceKey({self.name!r})"


class PluginServices:
    """What the router gives each plugin."""

    def __init__(
        self,
        *,
        http: ClientSession,
        dev_mode: bool,
        logger: logging.Logger,
        router_config: Config,
        providers_elsewhere: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self.http = http
        """Shared client session for outbound calls (IdP, JWKS, collectors)."""
        self.dev_mode = dev_mode
        """True under ``commons-router dev``."""
        self.logger = logger
        self.router_config = router_config
        """The router's validated configuration (read-only)."""
        self.providers_elsewhere = providers_elsewhere
        """True in a worker process (``workers > 1``): plugins with ``shares_providers`` must
        not run their providers (nor what feeds them) here; the supervisor runs them once
        and every worker gets their routes."""
        self.protected_headers: list[str] = []
        self._services: dict[ServiceKey[Any], Any] = {}
        self.upstream_observers: list[UpstreamObserver] = []
        self._original: OriginalResolver | None = None
        self._prefixed: PrefixedResolver | None = None
        self.certificates: CertificateSink | None = None
        """The certificate store, when a listener serves TLS."""

    def original_request(
        self, request: web.BaseRequest, family: HeaderFamily = "any"
    ) -> OriginalRequest:
        """The request a trusted proxy asks about (``X-Forwarded-Method``/``-Host``/``-Uri``,
        nginx's ``X-Original-Method``/``-URI``; ``family`` says which are read), normalized
        and routed like a direct request; the request itself when the peer is not a trusted
        proxy or names nothing.

        Raises :class:`~router.api.errors.RouterHTTPError` (400) for malformed values.
        """
        ctx = context_of(request)
        if self._original is None:
            return OriginalRequest(request.method, ctx.host, ctx.path, ctx.query, ctx.route, False)
        return self._original(request, ctx, family)

    def prefixed_request(self, request: web.BaseRequest, prefix: str) -> OriginalRequest | None:
        """The request an Envoy ``ext_authz`` HTTP check names: the check request's own
        method and ``Host``, and its target as sent after ``prefix`` (Envoy's
        ``path_prefix``), normalized and routed like a direct request. None when the peer is
        not a trusted proxy: nobody else may choose the path being judged.

        Raises :class:`~router.api.errors.RouterHTTPError` (400) when the target does not
        start with ``prefix`` followed by ``/``, or the path after it is malformed.
        """
        if self._prefixed is None:
            return None
        return self._prefixed(request, context_of(request), prefix)

    def set_original_resolver(
        self, resolver: OriginalResolver, prefixed: PrefixedResolver | None = None
    ) -> None:
        """Called by the core once the route table and trusted proxies are known."""
        self._original = resolver
        self._prefixed = prefixed

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
        """A counter shown in ``/metrics`` as ``commons_router_<name>`` (``name`` ends in
        ``_total``); ``inc(*label_values)`` adds one. Keep label values to a small set."""
        if self._metrics is None:
            return LabeledCounter(name, help_text, labels)
        return self._metrics.counter(name, help_text, labels)

    def protect_header(self, name: str) -> None:
        """Always strip ``name`` from client requests (an identity header this plugin sets).

        Call it from ``__init__`` or ``start``; names compare case-insensitively, ``_`` = ``-``.
        """
        self.protected_headers.append(name)

    def add_upstream_observer(self, observer: UpstreamObserver) -> None:
        """Be told about every upstream attempt (e.g. to make a client span per attempt)."""
        self.upstream_observers.append(observer)

    def provide(self, key: ServiceKey[T], value: T) -> None:
        if key in self._services:
            raise RuntimeError(f"service {key.name!r} is already provided")
        self._services[key] = value

    def lookup(self, key: ServiceKey[T]) -> T | None:
        value = self._services.get(key)
        return value if value is None or isinstance(value, key.type) else None

    def require(self, key: ServiceKey[T]) -> T:
        value = self.lookup(key)
        if value is None:
            raise LookupError(f"no plugin provides {key.name!r}: enable one in 'plugins'")
        return value


class Counter(Protocol):
    """A monotonic count, by label values (see :meth:`PluginServices.counter`)."""

    def inc(self, *label_values: str) -> None: ...


class CertificateSink(Protocol):
    """The router's certificate store, as a plugin that supplies certificates sees it.

    ``source`` names where a certificate comes from (``secret:namespace/name``); each source
    holds at most one certificate. The names it serves come from its SAN alone.
    """

    def put(self, source: str, chain_pem: bytes, key_pem: bytes) -> bool:
        """Serve this chain and key from now on; False when rejected (logged, and listed
        under /routes problems; the source's last good certificate keeps serving)."""
        ...

    def fail(self, source: str, message: str) -> None:
        """Report why ``source`` has no certificate to serve."""
        ...

    def remove(self, source: str) -> None:
        """Stop serving ``source``'s certificate and forget its problems."""
        ...


class UpstreamObserver(Protocol):
    """Sees each attempt to reach an endpoint; may set headers on the outgoing request.

    WebSocket handshakes are attempts too: ``status`` 101 when the endpoint switched, and
    the attempt finishes when the tunnel closes."""

    def attempt_started(
        self, request: web.BaseRequest, endpoint_url: str, headers: CIMultiDict[str]
    ) -> object:
        """Returns a token handed back to :meth:`attempt_finished`."""
        ...

    def attempt_finished(self, token: object, status: int | None, error: str | None) -> None:
        """``status`` of the upstream answer, or ``error`` (a short kind) when it failed."""
        ...


C = TypeVar("C", bound=BaseModel)


class Plugin(Generic[C]):
    """Base class for plugins. Subclasses set ``name`` and ``config_model``."""

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]] = NoConfig
    route_config_model: ClassVar[type[BaseModel] | None] = None
    """Model of the per-route block ``routes[].plugins.<name>``; None: not allowed."""
    shares_providers: ClassVar[bool] = False
    """True: with ``workers > 1`` this plugin's providers run once, in the supervisor
    process, whose routes every worker gets (see ``PluginServices.providers_elsewhere``).
    For providers that watch something outside: one watch instead of one per worker."""
    guards_access: ClassVar[bool] = False
    """True for plugins that allow or deny requests: their failures are logged as
    fail-closed denials."""
    signed_statement: ClassVar[SignedStatementProfile | None] = None
    """How this plugin signs a statement about each response, for ``inspect``; None: it
    signs nothing."""

    @classmethod
    def dev_preset(cls, options: DevOptions) -> DevPreset | None:
        """This plugin's place in ``commons-router dev`` (None: not part of it)."""
        return None

    def __init__(self, config: C, services: PluginServices) -> None:
        self.config = config
        self.services = services

    async def start(self) -> None:
        """Acquire resources (connections, background tasks)."""

    async def preflight(self) -> None:
        """What ``start`` would refuse, checked without connecting anywhere: files
        readable, keys parse. ``commons-router check`` calls it (instead of ``start``);
        raise :class:`ConfigError` with every problem."""

    async def stop(self) -> None:
        """Release what ``start`` acquired."""

    def providers(self) -> Sequence[Provider]:
        """Route providers this plugin contributes."""
        return ()

    def global_middleware(self) -> Middleware | None:
        """Middleware around every routable request (also 404s and reserved paths), built
        once at start. Use it for what concerns all traffic, such as tracing."""
        return None

    def reserved_paths(self) -> Mapping[str, Handler]:
        """Exact paths this plugin answers on every host, before routes are consulted.

        Each must start with ``/.well-known/commons-router/`` or ``/.commons-router/``.
        """
        return {}

    def reserved_prefixes(self) -> Mapping[str, Handler]:
        """Path prefixes this plugin answers on every host, before routes are consulted:
        every request whose target *as sent* starts with the prefix, and every request whose
        normalized path does (so dot segments cannot lead a request out of it, nor into a
        route).

        Each must start with ``/.commons-router/`` and not overlap another reserved path.
        """
        return {}

    def middleware(self, route: Route, route_config: Any) -> Middleware | None:
        """Middleware for one route, built once per route table; None to stay out of it.

        ``route_config`` is the validated ``route_config_model`` instance, or None when the
        route has no block for this plugin.
        """
        return None
