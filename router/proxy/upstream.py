"""Upstream endpoints, load balancing and passive health."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from yarl import URL

from router.config.models import Endpoint
from router.proxy.wire import Origin


class EndpointState:
    """One upstream endpoint and its health. Kept across route-table swaps by URL."""

    __slots__ = (
        "address",
        "attempts",
        "ejected_until",
        "failed_attempts",
        "failures",
        "invalid",
        "origin",
        "outstanding",
        "prefix",
        "url",
        "version",
    )

    def __init__(self, url: str, version: Mapping[str, str]) -> None:
        parsed = URL(url)
        self.url = url
        self.origin = str(parsed.origin())
        self.prefix = parsed.raw_path.rstrip("/")
        """Path the endpoint is mounted under; prepended to forwarded paths."""
        assert parsed.host is not None and parsed.port is not None
        self.address = Origin(parsed.scheme, parsed.host, parsed.port)
        self.invalid = parsed.host == "invalid" or parsed.host.endswith(".invalid")
        """A host under ``.invalid`` (RFC 6761: never resolves) stands for a backend
        reference that cannot be resolved: its share of requests is answered with 500."""
        self.version: Mapping[str, str] = MappingProxyType(dict(version))
        self.failures = 0
        """Consecutive failures (passive health)."""
        self.attempts = 0
        self.failed_attempts = 0
        self.ejected_until = 0.0
        self.outstanding = 0

    def target(self, path_qs: str) -> URL:
        return URL(self.origin + self.prefix + path_qs, encoded=True)


class EndpointRegistry:
    """Endpoint state by URL, so health and counters survive table rebuilds."""

    def __init__(self) -> None:
        self._states: dict[str, EndpointState] = {}

    def get(self, endpoint: Endpoint) -> EndpointState:
        state = self._states.get(endpoint.url)
        if state is None:
            state = EndpointState(endpoint.url, endpoint.version)
            self._states[endpoint.url] = state
        elif state.version != endpoint.version:
            state.version = MappingProxyType(dict(endpoint.version))
        return state

    def retain(self, urls: Iterable[str]) -> None:
        keep = set(urls)
        for url in [url for url in self._states if url not in keep]:
            del self._states[url]

    def __len__(self) -> int:
        return len(self._states)


class UpstreamPool:
    """The endpoints of one route and how to choose among them."""

    __slots__ = ("_cursor", "_rotation", "balancer", "ejection", "endpoints", "max_failures")

    def __init__(
        self,
        endpoints: list[tuple[EndpointState, int]],
        *,
        balancer: str,
        max_failures: int,
        ejection: float,
    ) -> None:
        self.endpoints = tuple(state for state, _ in endpoints)
        # Weighted round robin: each endpoint appears `weight` times, interleaved.
        rotation: list[EndpointState] = []
        for round_index in range(max((weight for _, weight in endpoints), default=0)):
            rotation.extend(state for state, weight in endpoints if weight > round_index)
        self._rotation = tuple(rotation)
        self._cursor = random.randrange(len(rotation)) if rotation else 0  # noqa: S311
        self.balancer = balancer
        self.max_failures = max_failures
        self.ejection = ejection

    def pick(self, now: float, exclude: EndpointState | None = None) -> EndpointState | None:
        """A healthy endpoint (not ``exclude``), or None when there is none."""
        if self.balancer == "least_outstanding":
            return self._pick_least_outstanding(now, exclude)
        rotation = self._rotation
        size = len(rotation)
        for _ in range(size):
            self._cursor = (self._cursor + 1) % size
            state = rotation[self._cursor]
            if state is not exclude and state.ejected_until <= now:
                return state
        return None

    def _pick_least_outstanding(
        self, now: float, exclude: EndpointState | None
    ) -> EndpointState | None:
        # Power of two choices: two random healthy endpoints, take the less busy one.
        healthy = [s for s in self.endpoints if s is not exclude and s.ejected_until <= now]
        if len(healthy) <= 1:
            return healthy[0] if healthy else None
        first, second = random.sample(healthy, 2)
        return first if first.outstanding <= second.outstanding else second

    def record_success(self, state: EndpointState) -> None:
        if state.failures:
            state.failures = 0

    def record_failure(self, state: EndpointState, now: float) -> bool:
        """Count a failure; returns True when this one ejected the endpoint.

        Failures of requests that were already under way when the endpoint was ejected
        do not count again: one dead endpoint is one ejection."""
        if state.ejected_until > now:
            return False
        state.failures += 1
        if state.failures >= self.max_failures:
            state.failures = 0
            state.ejected_until = now + self.ejection
            return True
        return False
