"""Route providers: sources of routes (the config file, Kubernetes, ...)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from router.config.models import Route


@dataclass(frozen=True, slots=True)
class RouteProblem:
    """A problem with one source object; it disables only the routes it names."""

    source: str
    """The object that caused it, e.g. ``ingress/default/shop`` or ``routes[2]``."""
    message: str
    route: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderUpdate:
    """The complete current state of one provider (not a delta)."""

    provider: str
    routes: tuple[Route, ...]
    problems: tuple[RouteProblem, ...] = field(default=())


Publish = Callable[[ProviderUpdate], None]


class Provider(Protocol):
    """Runs until cancelled, calling ``publish`` with each new complete state."""

    @property
    def name(self) -> str: ...

    async def run(self, publish: Publish) -> None: ...
