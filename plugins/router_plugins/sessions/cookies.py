"""The session cookie: an opaque id, never tokens.

Over TLS its name carries the ``__Host-`` prefix (Secure, Path=/, no Domain), so no
sibling subdomain can set or shadow it. Always HttpOnly and SameSite=Lax.
"""

from __future__ import annotations

from http.cookies import SimpleCookie

from aiohttp import web


class CookieSettings:
    __slots__ = ("max_age", "name", "secure")

    def __init__(self, base_name: str, *, secure: bool, max_age: float) -> None:
        self.secure = secure
        self.name = f"__Host-{base_name}" if secure else base_name
        self.max_age = int(max_age)

    def named(self, suffix: str) -> str:
        """Another cookie with the same attributes (e.g. a per-flow login cookie)."""
        return f"{self.name}-{suffix}"

    def read(self, request: web.BaseRequest, name: str | None = None) -> str | None:
        """The cookie's value, or None. The first of several with that name wins (browsers
        send the most specific first)."""
        return self.value_in(request.headers.get("Cookie"), name)

    def value_in(self, raw: str | None, name: str | None = None) -> str | None:
        """The cookie's value in a raw ``Cookie`` header, or None (see :meth:`read`)."""
        wanted = name or self.name
        if not raw or wanted not in raw:
            return None
        # A plain split is enough for our own cookies (URL-safe values) and much cheaper
        # than a full cookie parse on every request.
        for part in raw.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == wanted:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                return value or None
        return None

    def set(
        self,
        response: web.StreamResponse,
        value: str,
        *,
        name: str | None = None,
        max_age: float | None = None,
    ) -> None:
        response.set_cookie(
            name or self.name,
            value,
            max_age=int(max_age if max_age is not None else self.max_age),
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="Lax",
        )

    def clear(self, response: web.StreamResponse, *, name: str | None = None) -> None:
        response.headers.add("Set-Cookie", self.clearing_header(name))

    def clearing_header(self, name: str | None = None) -> str:
        """A ``Set-Cookie`` value that removes the cookie (also usable from a response
        hook, after the response's own cookies became headers)."""
        jar: SimpleCookie = SimpleCookie()
        wanted = name or self.name
        jar[wanted] = ""
        morsel = jar[wanted]
        morsel["max-age"] = "0"
        morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
        morsel["path"] = "/"
        morsel["httponly"] = True
        morsel["samesite"] = "Lax"
        if self.secure:
            morsel["secure"] = True
        return morsel.OutputString()
