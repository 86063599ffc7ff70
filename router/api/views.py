"""Read-only views of what the router matched, as plugins see them.

The core's own objects (compiled routes with their handler chains and upstream pools,
endpoints with their health counters) satisfy these protocols; a plugin reads names, hosts,
paths, endpoint URLs and code versions through them and cannot reach the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class EndpointView(Protocol):
    """One endpoint of a route."""

    @property
    def url(self) -> str:
        """``scheme://host:port`` of the endpoint."""
        ...

    @property
    def version(self) -> Mapping[str, str]:
        """Its code version (repository, commit, image, image_digest, pod …), maybe empty."""
        ...


class RouteView(Protocol):
    """The route a request matched."""

    @property
    def name(self) -> str: ...

    @property
    def hosts(self) -> Sequence[str]:
        """Host names (exact or ``*.`` wildcards); empty: any host."""
        ...

    @property
    def path(self) -> str: ...

    @property
    def path_type(self) -> str:
        """``Prefix`` or ``Exact``."""
        ...

    @property
    def endpoints(self) -> Sequence[EndpointView]:
        """Every endpoint of the route, healthy or not (empty for builtins)."""
        ...
