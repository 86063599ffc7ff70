"""The plugin API: everything a plugin may import from the core."""

from router.api.context import CONTEXT_KEY, RequestContext, context_of
from router.api.errors import RouterHTTPError
from router.api.plugin import (
    CertificateSink,
    Handler,
    Middleware,
    NoConfig,
    Plugin,
    PluginServices,
    ServiceKey,
    UpstreamObserver,
)
from router.api.provider import Provider, ProviderUpdate, Publish, RouteProblem

__all__ = [
    "CONTEXT_KEY",
    "CertificateSink",
    "Handler",
    "Middleware",
    "NoConfig",
    "Plugin",
    "PluginServices",
    "Provider",
    "ProviderUpdate",
    "Publish",
    "RequestContext",
    "RouteProblem",
    "RouterHTTPError",
    "ServiceKey",
    "UpstreamObserver",
    "context_of",
]
