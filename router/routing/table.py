"""The route table: an immutable snapshot matched by host, then path.

Host precedence: an exact host, else a ``*.suffix`` wildcard (exactly one extra label, as
in Kubernetes Ingress), else the routes with no host. SECURITY: the most specific host that
has routes decides alone; a path that none of its routes match is a 404, never a
fall-through to a less specific host (which could have weaker auth).

Path precedence (Kubernetes Ingress semantics): the longest match wins; ``Prefix`` matches
element by element (``/foo`` matches ``/foo`` and ``/foo/bar``, not ``/foobar``); an
``Exact`` match beats a ``Prefix`` of the same length.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from router.config.models import Route


class HasSpec(Protocol):
    @property
    def spec(self) -> Route: ...


R = TypeVar("R", bound=HasSpec)


class _HostGroup(Generic[R]):
    __slots__ = ("exact", "prefix")

    def __init__(self) -> None:
        self.exact: dict[str, R] = {}
        self.prefix: dict[str, R] = {}

    def match(self, path: str) -> R | None:
        found = self.exact.get(path)
        if found is not None:
            return found
        prefixes = self.prefix
        if not prefixes:
            return None
        found = prefixes.get(path)
        if found is not None:
            return found
        cut = path
        while True:
            slash = cut.rfind("/")
            if slash <= 0:
                return prefixes.get("/")
            cut = cut[:slash]
            found = prefixes.get(cut)
            if found is not None:
                return found


@dataclass(frozen=True, slots=True)
class Conflict:
    route: str
    other: str
    message: str


def prefix_key(path: str) -> str:
    return path.rstrip("/") or "/"


class RouteTable(Generic[R]):
    """Immutable once built; replaced as a whole when routes change."""

    __slots__ = ("_any", "_exact", "_wildcard", "conflicts", "routes")

    def __init__(self, routes: Iterable[R]) -> None:
        self._exact: dict[str, _HostGroup[R]] = {}
        self._wildcard: dict[str, _HostGroup[R]] = {}
        self._any: _HostGroup[R] | None = None
        accepted: list[R] = []
        conflicts: list[Conflict] = []
        for route in routes:
            conflict = self._add(route)
            if conflict is None:
                accepted.append(route)
            else:
                conflicts.append(conflict)
        self.routes: Sequence[R] = tuple(accepted)
        self.conflicts: Sequence[Conflict] = tuple(conflicts)

    def _groups_for(self, route: R) -> list[_HostGroup[R]]:
        hosts = route.spec.hosts
        if not hosts:
            if self._any is None:
                self._any = _HostGroup()
            return [self._any]
        groups = []
        for host in hosts:
            table = self._wildcard if host.startswith("*.") else self._exact
            key = host[2:] if host.startswith("*.") else host
            group = table.get(key)
            if group is None:
                group = table[key] = _HostGroup()
            groups.append(group)
        return groups

    def _add(self, route: R) -> Conflict | None:
        spec = route.spec
        groups = self._groups_for(route)
        exact = spec.path_type == "Exact"
        key = spec.path if exact else prefix_key(spec.path)
        for group in groups:
            existing = (group.exact if exact else group.prefix).get(key)
            if existing is not None:
                return Conflict(
                    spec.name,
                    existing.spec.name,
                    f"same host and {spec.path_type} path {spec.path!r} as route "
                    f"{existing.spec.name!r}",
                )
        for group in groups:
            (group.exact if exact else group.prefix)[key] = route
        return None

    def match(self, host: str, path: str) -> R | None:
        group = self._exact.get(host)
        if group is None:
            dot = host.find(".")
            if dot > 0:
                group = self._wildcard.get(host[dot + 1 :])
            if group is None:
                group = self._any
                if group is None:
                    return None
        return group.match(path)
