"""``ip_filter``: allow or deny requests by client address, globally or per route.

Rules are CIDR lists. A request is denied (403) when its client address matches ``deny``,
or when ``allow`` is non-empty and the address matches none of it. The client address is
the one the router established (X-Forwarded-For is believed only from trusted proxies).
"""

from router_plugins.ip_filter.plugin import IpFilterPlugin
from router_plugins.ip_filter.settings import IpFilterConfig, IpRules

__all__ = ["IpFilterConfig", "IpFilterPlugin", "IpRules"]
