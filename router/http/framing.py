"""Request framing and Host checks, applied before anything else looks at a request.

SECURITY: anything that two HTTP parsers could read differently (request smuggling) is
refused with 400 and the connection closed (by ``protocol.py``, before any handler runs):
HTTP versions other than 1.0 and 1.1 (llhttp also accepts ``HTTP/0.9`` and ``HTTP/2.0``
request lines), Content-Length together with Transfer-Encoding, several or non-numeric
Content-Length values, any Transfer-Encoding but exactly ``chunked``, Transfer-Encoding in
HTTP/1.0, and several Host headers.

aiohttp's C parser (llhttp, strict mode) already refuses most of these, and obs-fold, bare
LF, NUL and other control characters in header values; the checks here are the second line
and also cover what it lets through.
"""

from __future__ import annotations

import re

from aiohttp import HttpVersion, HttpVersion10, HttpVersion11
from multidict import CIMultiDictProxy

_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?\.?$")
_IPV6_LITERAL = re.compile(r"^\[[0-9a-f:.]+\]$")
_VERSIONS = (HttpVersion10, HttpVersion11)
UNSUPPORTED_VERSION = "unsupported HTTP version"


def framing_problem(version: HttpVersion, headers: CIMultiDictProxy[str]) -> str | None:
    """Why a parsed request head's framing is ambiguous, or None when it is sound."""
    if version not in _VERSIONS:
        return UNSUPPORTED_VERSION
    hosts = headers.getall("Host", ())
    if len(hosts) > 1:
        return "several Host headers"
    if not hosts and version >= (1, 1):
        return "missing Host header"
    if "Transfer-Encoding" in headers:
        if version < (1, 1):
            return "Transfer-Encoding is not allowed in HTTP/1.0"
        codings = headers.getall("Transfer-Encoding")
        if len(codings) != 1 or codings[0].strip().lower() != "chunked":
            return "only 'Transfer-Encoding: chunked' is accepted"
        if "Content-Length" in headers:
            return "both Content-Length and Transfer-Encoding"
    elif "Content-Length" in headers:
        lengths = headers.getall("Content-Length")
        if len(lengths) != 1:
            return "several Content-Length headers"
        if not lengths[0].isdigit() or not lengths[0].isascii():
            return "invalid Content-Length"
    return None


class HostParser:
    """``Host`` header -> lowercase name without port or trailing dot; cached."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, str | None] = {}

    def parse(self, raw: str) -> str | None:
        """The routing host, or None when the header is not a valid host[:port]."""
        cache = self._cache
        found = cache.get(raw, "")
        if found != "":
            return found
        host = _parse_host(raw)
        if len(cache) > 10_000:
            cache.clear()
        cache[raw] = host
        return host


def _parse_host(raw: str) -> str | None:
    value = raw.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
        if not _IPV6_LITERAL.match(name):
            return None
    else:
        name, _, port = value.partition(":")
        rest = ":" + port if _ else ""
    if rest and (not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6):
        return None
    if name.startswith("["):
        return name
    if not name or len(name) > 253 or not _HOST_NAME.match(name):
        return None
    return name.rstrip(".")
