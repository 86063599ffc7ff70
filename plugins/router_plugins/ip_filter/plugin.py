"""The ``ip_filter`` plugin class: a 403 for client addresses the rules refuse."""

from __future__ import annotations

import ipaddress
from typing import Any

from aiohttp import web

from router.api import Handler, Middleware, Plugin, Route, RouterHTTPError, context_of
from router_plugins.ip_filter.settings import IpFilterConfig, IpRules


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
