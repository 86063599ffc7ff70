"""``ip_filter``: allow or deny requests by client address, globally or per route.

Rules are CIDR lists. A request is denied (403) when its client address matches ``deny``,
or when ``allow`` is non-empty and the address matches none of it. The client address is
the one the router established (X-Forwarded-For is believed only from trusted proxies).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.api import Handler, Middleware, Plugin, RouterHTTPError, context_of
from router.config.models import Route
from router.config.types import check_cidrs

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: list[str] = Field(default_factory=list)
    """CIDRs allowed; empty: everyone not denied."""
    deny: list[str] = Field(default_factory=list)
    """CIDRs always denied."""

    @field_validator("allow", "deny")
    @classmethod
    def _check(cls, value: list[str]) -> list[str]:
        return check_cidrs(value)


class IpFilterConfig(IpRules):
    """Default rules for every route; a route's own block replaces them."""


class _Matcher:
    __slots__ = ("allow", "deny")

    def __init__(self, rules: IpRules) -> None:
        self.allow = tuple(ipaddress.ip_network(c, strict=False) for c in rules.allow)
        self.deny = tuple(ipaddress.ip_network(c, strict=False) for c in rules.deny)

    def permits(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False  # fail closed on anything unparsable
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.deny):
            return False
        return not self.allow or any(ip in network for network in self.allow)


class IpFilterPlugin(Plugin[IpFilterConfig]):
    name = "ip_filter"
    config_model = IpFilterConfig
    route_config_model = IpRules
    guards_access = True

    def middleware(self, route: Route, route_config: Any) -> Middleware | None:
        rules: IpRules = route_config if route_config is not None else self.config
        if not rules.allow and not rules.deny:
            return None
        matcher = _Matcher(rules)

        async def ip_filter(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            if not matcher.permits(context_of(request).client_ip):
                raise RouterHTTPError(403, "Your network address is not allowed on this route.")
            return await handler(request)

        return ip_filter
