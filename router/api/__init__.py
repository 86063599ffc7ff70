"""The plugin API: everything a plugin may import from the core."""

from router.api.context import CONTEXT_KEY, RequestContext, context_of
from router.api.contributions import DevOptions, DevPreset, SignedStatementProfile
from router.api.errors import RouterHTTPError
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
from router.buildinfo import ROUTER_IMAGE, BuildInfo, RouterImage, build_info

__all__ = [
    "CONTEXT_KEY",
    "ROUTER_IMAGE",
    "BuildInfo",
    "CertificateSink",
    "Counter",
    "DevOptions",
    "DevPreset",
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
    "RouterImage",
    "ServiceKey",
    "SignedStatementProfile",
    "UpstreamObserver",
    "build_info",
    "context_of",
]
