"""Answers in Envoy's ``ext_authz`` HTTP protocol (Envoy Gateway's ``SecurityPolicy``
``extAuth.http``, Gateway API's ``ExternalAuth`` filter in HTTP mode).

Envoy sends the original method, ``Host`` and ``<path_prefix><path and query>`` to the
authorization service and treats **200** as "allow": the response headers it was told to
accept (``allowed_upstream_headers``, ``headersToBackend``, ``allowedResponseHeaders``) are
*set* on the request to the backend, and the names listed in
``x-envoy-auth-headers-to-remove`` are removed from it. Any other status is a denial and goes
to the client with its headers and body (a 5xx becomes Envoy's own 403).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import product

from aiohttp import web

EXT_AUTHZ_PREFIX = "/.commons-router/ext-authz"
REMOVE_HEADER = "x-envoy-auth-headers-to-remove"


def underscore_spellings(name: str, limit: int = 5) -> list[str]:
    """``x-forwarded-user`` -> ``x_forwarded-user``, ``x-forwarded_user``, ``x_forwarded_user``:
    the names a WSGI/ASGI backend reads as the same header (at most ``2**limit - 1``)."""
    parts = name.lower().split("-")
    if len(parts) == 1 or len(parts) - 1 > limit:
        return [name.lower().replace("-", "_")] if len(parts) > 1 else []
    out = []
    for joins in product("-_", repeat=len(parts) - 1):
        if "_" in joins:
            out.append(parts[0] + "".join(j + p for j, p in zip(joins, parts[1:], strict=True)))
    return out


class AllowAnswers:
    """Builds the 200 answers.

    SECURITY: Envoy *sets* the allowed headers over the client's, and leaves alone every
    other spelling (``X_Forwarded_User``, which WSGI/ASGI backends read as
    ``X-Forwarded-User``) and every header the answer does not carry. So every identity
    header the router owns is in every answer, empty when this user has no value for it (a
    gateway that ignores the removal list still overwrites the client's value), and the
    removal list names the empty ones and every ``_`` spelling of all of them."""

    __slots__ = ("_owned", "_spellings")

    def __init__(self, owned: Iterable[str]) -> None:
        self._owned = tuple(dict.fromkeys(name for name in owned if name))
        self._spellings = [s for name in self._owned for s in underscore_spellings(name)]

    def allow(
        self,
        identity_headers: dict[str, str],
        *,
        remove_authorization: bool = False,
        upstream_cookie: str | None = "",
    ) -> web.Response:
        """``identity_headers``: the user's (empty without a user); ``upstream_cookie``: the
        ``Cookie`` header the backend may see ("" to leave it alone, None to remove it)."""
        response = web.Response(status=200)
        headers = response.headers
        remove = list(self._spellings)
        for name in self._owned:
            value = identity_headers.get(name)
            if value:
                headers[name] = value
            else:
                headers[name] = ""
                remove.append(name.lower())
        for name, value in identity_headers.items():
            if name not in headers:
                headers[name] = value
        if remove_authorization:
            remove.append("authorization")
        if upstream_cookie is None:
            remove.append("cookie")
        elif upstream_cookie:
            headers["Cookie"] = upstream_cookie
        if remove:
            headers[REMOVE_HEADER] = ", ".join(remove)
        return response
