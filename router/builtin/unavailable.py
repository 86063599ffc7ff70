"""The ``unavailable`` builtin: 503 for a route that exists but has nothing to serve it;
and ``invalid_backend``: 500 for a route whose backend reference is invalid.

A provider uses it to keep a route's host and path claimed while its backend has no
endpoint (or its settings are broken), so requests get a clear 503 instead of falling
through to a less specific route.
"""

from __future__ import annotations

from aiohttp import web

from router.api.context import CONTEXT_KEY
from router.api.errors import RouterHTTPError


async def unavailable(request: web.BaseRequest) -> web.StreamResponse:
    route = request[CONTEXT_KEY].route
    name = route.name if route is not None else "?"
    raise RouterHTTPError(503, f"No endpoint of route {name!r} is available.")


async def invalid_backend(request: web.BaseRequest) -> web.StreamResponse:
    """The Gateway API answers requests for an invalid backend reference with 500."""
    route = request[CONTEXT_KEY].route
    name = route.name if route is not None else "?"
    raise RouterHTTPError(500, f"The backend of route {name!r} is not valid.")
