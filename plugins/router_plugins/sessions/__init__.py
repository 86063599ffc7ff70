"""``sessions``: server-side sessions in memory or Redis, sealed at rest.

Other plugins reach the store through the :data:`SESSIONS` service key.
"""

from router_plugins.sessions.backend import Backend, StoreUnavailable
from router_plugins.sessions.cookies import CookieSettings
from router_plugins.sessions.model import Session
from router_plugins.sessions.plugin import SESSIONS, SessionsConfig, SessionService, SessionsPlugin
from router_plugins.sessions.store import SessionStore

__all__ = [
    "SESSIONS",
    "Backend",
    "CookieSettings",
    "Session",
    "SessionService",
    "SessionStore",
    "SessionsConfig",
    "SessionsPlugin",
    "StoreUnavailable",
]
