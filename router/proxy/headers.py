"""Header hygiene between client, router and upstream.

SECURITY: headers named in ``Connection`` are removed *before* the router adds its own, so
``Connection: X-Forwarded-User`` cannot delete an injected value, and ``Connection`` cannot
name ``Host`` (the backend must see the Host the route was chosen by); identity headers are
compared case-insensitively with ``_`` read as ``-`` (``X_Forwarded_Email`` reaches a WSGI
backend as ``HTTP_X_FORWARDED_EMAIL``, the same variable as ``X-Forwarded-Email``).
A header sent on several lines is one comma-separated list (RFC 9110 section 5.3): the
forwarding headers of a trusted proxy are read whole, never only their first line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        # SECURITY: HTTP/2 cleartext upgrade (h2c) settings; never forwarded with or
        # without a Connection header naming it.
        "http2-settings",
    }
)

# SECURITY: ``Connection: Host`` would make the backend see its own address instead of the
# Host the route was matched on.
_NOT_HOP_BY_HOP = frozenset({"host"})

FORWARDING_HEADERS = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "x-request-id",
    }
)

DEFAULT_IDENTITY_HEADERS = (
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Access-Token",
    "X-Auth-User",
    # The signed identity assertion's default name: removed whether or not one is configured.
    "X-Commons-Identity",
)
"""Identity headers removed from every client request, besides the families below and the
names the configuration gives."""

IDENTITY_PREFIXES = ("x-auth-request-", "remote-", "x-remote-")
"""SECURITY: whole families, removed by prefix (canonical form): oauth2-proxy's
``X-Auth-Request-*``, and the ``Remote-*`` / ``X-Remote-*`` names that Authelia, Apache
and frameworks' remote-user middleware trust."""

URL_OVERRIDE_HEADERS = frozenset({"x-original-url", "x-rewrite-url", "x-original-uri"})
"""SECURITY: frameworks that honour these (Symfony, Laminas, IIS) route by them instead of
the request line, so ``/public`` with ``X-Original-URL: /admin`` would reach ``/admin``
after the router decided on ``/public``."""

CLIENT_ADDRESS_HEADERS = frozenset(
    {
        "true-client-ip",
        "x-original-forwarded-for",
        "x-client-ip",
        "x-cluster-client-ip",
        "client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-originating-ip",
        "x-forwarded",
        "forwarded-for",
    }
)
"""Headers that claim the client's address: passed on only from ``trusted_proxies``."""


def canonical_header(name: str) -> str:
    return name.lower().replace("_", "-")


def connection_tokens(value: str) -> frozenset[str]:
    return frozenset(canonical_header(token.strip()) for token in value.split(",") if token)


def joined(headers: CIMultiDictProxy[str], name: str) -> str | None:
    """All lines of a list-valued header as one value, or None when it is absent."""
    values = headers.getall(name, ())
    if not values:
        return None
    return values[0] if len(values) == 1 else ", ".join(values)


class TrustedPeers:
    """Decides whether a peer address may speak for the client (X-Forwarded-* etc.)."""

    __slots__ = ("_cache", "_networks")

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)
        self._cache: dict[str, bool] = {}

    def trusts(self, address: str) -> bool:
        if not self._networks:
            return False
        known = self._cache.get(address)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            trusted = False
        else:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            trusted = any(ip in network for network in self._networks)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[address] = trusted
        return trusted

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The rightmost address in ``X-Forwarded-For`` that is not a trusted proxy."""
        if forwarded_for is None or not self.trusts(peer):
            return peer
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            if hop and not self.trusts(hop):
                return hop
        return peer


class HeaderPolicy:
    """What to drop from client requests and upstream responses. Built once per config."""

    __slots__ = ("request_drop", "response_drop", "untrusted_drop")

    def __init__(self, identity_headers: Iterable[str]) -> None:
        identity = {
            canonical_header(name) for name in (*DEFAULT_IDENTITY_HEADERS, *identity_headers)
        }
        self.request_drop = frozenset(
            HOP_BY_HOP | FORWARDING_HEADERS | URL_OVERRIDE_HEADERS | identity
        )
        """Dropped from every client request."""
        self.untrusted_drop = self.request_drop | CLIENT_ADDRESS_HEADERS
        """Dropped from requests whose peer is not a trusted proxy."""
        self.response_drop = HOP_BY_HOP

    def upstream_headers(
        self,
        incoming: CIMultiDictProxy[str],
        *,
        keep_host: bool,
        remove: frozenset[str],
        trusted: bool = False,
    ) -> CIMultiDict[str]:
        """Client headers minus hop-by-hop, forwarding, identity (by name and by family),
        URL-override and ``remove`` names; client-address headers only from a ``trusted``
        peer."""
        drop = self.request_drop if trusted else self.untrusted_drop
        connection = joined(incoming, "Connection")
        if connection is not None:
            drop = drop | (connection_tokens(connection) - _NOT_HOP_BY_HOP)
        if remove:
            drop = drop | remove
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in incoming.items():
            key = name.lower()
            if "_" in key:
                key = key.replace("_", "-")
            if (
                key in drop
                or key.startswith(IDENTITY_PREFIXES)
                or (key == "host" and not keep_host)
            ):
                continue
            headers.add(name, value)
        return headers

    def copy_downstream(
        self,
        upstream: Sequence[tuple[str, str]],
        connection: str | None,
        into: CIMultiDict[str],
        remove: frozenset[str],
    ) -> None:
        """Add the upstream's response headers to ``into``, minus hop-by-hop ones and the
        ones its ``Connection`` header names."""
        drop = self.response_drop
        if connection is not None:
            drop = drop | _connection_tokens_cached(connection)
        if remove:
            drop = drop | remove
        for name, value in upstream:
            if name.lower() not in drop:
                into.add(name, value)


_TOKEN_CACHE: dict[str, frozenset[str]] = {}


def _connection_tokens_cached(value: str) -> frozenset[str]:
    # Upstreams answer the same few values ("keep-alive") on every response.
    tokens = _TOKEN_CACHE.get(value)
    if tokens is None:
        if len(_TOKEN_CACHE) > 256:
            _TOKEN_CACHE.clear()
        tokens = _TOKEN_CACHE[value] = connection_tokens(value)
    return tokens


def forwarded_element(client: str, host: str, proto: str) -> str:
    """One RFC 7239 ``Forwarded`` element."""
    node = f'"[{client}]"' if ":" in client else client
    return f'for={node};host="{_quote(host)}";proto={proto}'


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
