"""The plugin API: everything a plugin may import from the core."""

from router.api.context import CONTEXT_KEY, RequestContext, context_of
from router.api.errors import RouterHTTPError
from router.api.original import HeaderFamily, OriginalRequest
from router.api.plugin import (
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
    "Handler",
    "HeaderFamily",
    "Middleware",
    "NoConfig",
    "OriginalRequest",
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
