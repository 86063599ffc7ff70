"""``auth``: authentication (OIDC sessions, bearer JWTs) and per-route access policy."""

from router_plugins.auth.config import AuthConfig, RouteAuth
from router_plugins.auth.plugin import AuthPlugin

__all__ = ["AuthConfig", "AuthPlugin", "RouteAuth"]
