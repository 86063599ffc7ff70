"""The request a trusted proxy asks about (forward-auth), resolved like a direct request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from router.api.views import RouteView

HeaderFamily = Literal["any", "nginx", "traefik"]
"""Which headers name the original request: nginx's ``X-Original-URI``/``-Method`` (host
from ``Host``), Traefik's ``X-Forwarded-Uri``/``-Method``/``-Host``, or both (they must
agree)."""


@dataclass(frozen=True, slots=True)
class OriginalRequest:
    method: str
    host: str
    path: str
    """Normalized exactly like a direct request's path (the one a route is matched on)."""
    query: str
    route: RouteView | None
    """The route a direct request for ``host`` and ``path`` would take."""
    forwarded: bool
    """True when a trusted proxy named the original request; False when this request
    describes itself (no trusted proxy, or no original URI sent)."""
