"""``sessions``: server-side sessions in memory or Redis, sealed at rest.

Other plugins reach the store through the :data:`SESSIONS` service key.
"""

from router_plugins.sessions.backend import Backend, StoreUnavailable
from router_plugins.sessions.cookies import CookieSettings
from router_plugins.sessions.model import Session, digest
from router_plugins.sessions.plugin import SESSIONS, SessionService, SessionsPlugin
from router_plugins.sessions.settings import SessionsConfig
from router_plugins.sessions.singleflight import single_flight
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
    "digest",
    "single_flight",
]
