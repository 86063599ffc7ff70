"""The plugin API: everything a plugin may import from the core.

A plugin imports ``router.api`` and nothing else of the router (``router.testing`` in its
tests); ``tests/unit/test_architecture.py`` enforces it. What is here:

- the contract: :class:`Plugin`, :class:`PluginServices`, :class:`ServiceKey`, middleware
  and handler types, :class:`UpstreamObserver`, route providers (:class:`Provider`,
  :class:`ProviderUpdate`, :class:`Publish`, :class:`RouteProblem`), the certificate
  sink, and what plugins contribute to the commands (:class:`DevPreset`,
  :class:`SignedStatementProfile`);
- per request: :class:`RequestContext` (reached with :func:`context_of`) with read-only
  views of the matched route and endpoint (:class:`RouteView`, :class:`EndpointView`),
  response hooks,
  :class:`OriginalRequest` for forward-auth, :class:`RouterHTTPError` for a clear answer;
- configuration: the route and endpoint models a provider builds, the duration and size
  types settings use, address checks, and :class:`PluginConfigError`, the one way to
  report a plugin's unusable settings;
- small shared services: :class:`TrustedPeers`, request ids and random hex from one pool,
  :func:`wants_json`, the router's own :func:`build_info` and image digest.
"""

from router.api.context import RequestContext, ResponseHook, context_of
from router.api.contributions import DevOptions, DevPreset, SignedStatementProfile
from router.api.errors import PluginConfigError, RouterHTTPError
from router.api.original import HeaderFamily, OriginalRequest
from router.api.plugin import (
    CertificateSink,
    Counter,
    Handler,
    Middleware,
    NoConfig,
    Plugin,
    PluginServices,
    ServiceKey,
    UpstreamObserver,
)
from router.api.provider import Provider, ProviderUpdate, Publish, RouteProblem
from router.api.views import EndpointView, RouteView
from router.buildinfo import ROUTER_IMAGE, BuildInfo, RouterImage, build_info
from router.config.models import Endpoint, Route
from router.config.types import ByteCount, Duration, check_cidrs, split_host_port
from router.errors import wants_json
from router.proxy.headers import TrustedPeers
from router.randomness import RANDOM_HEX, RandomHex

__all__ = [
    "RANDOM_HEX",
    "ROUTER_IMAGE",
    "BuildInfo",
    "ByteCount",
    "CertificateSink",
    "Counter",
    "DevOptions",
    "DevPreset",
    "Duration",
    "Endpoint",
    "EndpointView",
    "Handler",
    "HeaderFamily",
    "Middleware",
    "NoConfig",
    "OriginalRequest",
    "Plugin",
    "PluginConfigError",
    "PluginServices",
    "Provider",
    "ProviderUpdate",
    "Publish",
    "RandomHex",
    "RequestContext",
    "ResponseHook",
    "Route",
    "RouteProblem",
    "RouteView",
    "RouterHTTPError",
    "RouterImage",
    "ServiceKey",
    "SignedStatementProfile",
    "TrustedPeers",
    "UpstreamObserver",
    "build_info",
    "check_cidrs",
    "context_of",
    "split_host_port",
    "wants_json",
]
