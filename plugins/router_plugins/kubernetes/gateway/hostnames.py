"""Gateway API hostname matching: a listener's hostname against a route's hostnames.

In the Gateway API a ``*.`` wildcard stands for one label or more; the routes made from
HTTPRoutes say so to the route table (``wildcard_depth: any``).
"""

from __future__ import annotations


def _covers(pattern: str, host: str) -> bool:
    """Whether the hostname pattern ``pattern`` takes every name ``host`` stands for."""
    if pattern == host:
        return True
    if not pattern.startswith("*."):
        return False
    suffix = pattern[1:]  # ".example.com"
    name = host[2:] if host.startswith("*.") else host
    return name.endswith(suffix) and len(name) > len(suffix)


def intersect(listener: str | None, route: list[str]) -> list[str] | None:
    """The hosts a route serves on a listener ("" alone: any host); None: no overlap."""
    if not route:
        return [listener] if listener else [""]
    if not listener:
        return list(route)
    found = []
    for host in route:
        if _covers(listener, host):
            found.append(host)
        elif _covers(host, listener):
            found.append(listener)
    return sorted(set(found)) or None
