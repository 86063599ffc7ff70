"""``auth``: authentication (OIDC sessions, bearer JWTs) and per-route access policy."""

from router_plugins.auth.plugin import AuthPlugin
from router_plugins.auth.settings import AuthConfig, RouteAuth

__all__ = ["AuthConfig", "AuthPlugin", "RouteAuth"]
