"""The route table: an immutable snapshot matched by host, then path.

Host precedence: an exact host, else a ``*.suffix`` wildcard (exactly one extra label, as
in Kubernetes Ingress), else the routes with no host. SECURITY: the most specific host that
has routes decides alone; a path that none of its routes match is a 404, never a
fall-through to a less specific host (which could have weaker auth).

Path precedence (Kubernetes Ingress semantics): the longest match wins; ``Prefix`` matches
element by element (``/foo`` matches ``/foo`` and ``/foo/bar``, not ``/foobar``); an
``Exact`` match beats a ``Prefix`` of the same length.

Each route's ``path_match`` options (defaults: ``paths.match``) widen what it takes, for
backends that normalize more than Ingress does: any letter case, an ``Exact`` path with a
final ``/``, and paths that match it once ``%3B``/``%23``/``%3F`` or ``%25XX`` are decoded
(:meth:`RouteTable.resolve`). Two routes that would both take one spelling of the same
length (``/Admin`` and a case-insensitive ``/admin``) conflict, like two routes with one path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar, cast
from urllib.parse import parse_qsl

from router.config.models import PathMatch, Route, effective_path_match
from router.routing.paths import DOUBLE_ENCODED, ENCODED_DELIMITER, NormalizedTarget, PathError


class HasSpec(Protocol):
    @property
    def spec(self) -> Route: ...


R = TypeVar("R", bound=HasSpec)


class MatchFacts(NamedTuple):
    """What conditional routes (``match``, ``listeners`` shared by several routes of one
    host and path) are chosen by."""

    method: str
    headers: Mapping[str, str]
    query: str
    listener: str


def _first_values(query: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        values.setdefault(name, value)
    return values


def satisfied(spec: Route, facts: MatchFacts | None) -> bool:
    """Whether the request meets the route's ``match`` (and, when several routes share
    the path, its ``listeners``). Without facts only unconditional routes do."""
    match = spec.match
    if facts is None:
        return not match.conditional
    if spec.listeners and facts.listener not in spec.listeners:
        return False
    if match.method is not None and facts.method != match.method:
        return False
    for name, value in match.headers.items():
        if facts.headers.get(name) != value:
            return False
    if match.query:
        values = _first_values(facts.query)
        return all(values.get(name) == value for name, value in match.query.items())
    return True


def _precedence(route: HasSpec) -> tuple[bool, int, int, bool]:
    match = route.spec.match
    return (match.method is None, -len(match.headers), -len(match.query), not route.spec.listeners)


def _overlap(one: Route, other: Route) -> bool:
    """Whether some request could be taken by both (same conditions, shared listeners)."""
    if one.match != other.match:
        return False
    return (
        not one.listeners or not other.listeners or bool(set(one.listeners) & set(other.listeners))
    )


class _Choice(Generic[R]):
    """Routes of one host and path told apart by their conditions, in precedence order."""

    __slots__ = ("options",)

    def __init__(self, options: list[R]) -> None:
        self.options = sorted(options, key=_precedence)

    @property
    def spec(self) -> Route:
        return self.options[0].spec

    def add(self, route: R) -> None:
        self.options = sorted([*self.options, route], key=_precedence)

    def pick(self, facts: MatchFacts | None) -> R | None:
        for option in self.options:
            if satisfied(option.spec, facts):
                return option
        return None


def _pick(found: R | None, facts: MatchFacts | None) -> R | None:
    if type(found) is _Choice:
        return cast("_Choice[R]", found).pick(facts)
    return found


class _Keys(Generic[R]):
    """The routes of one path type in one host group, by path (case-sensitive ones) and by
    lowercased path (case-insensitive ones)."""

    __slots__ = ("by_path", "folded", "lowered")

    def __init__(self) -> None:
        self.by_path: dict[str, R] = {}
        self.folded: dict[str, R] = {}
        self.lowered: dict[str, R] | None = None
        """Case-sensitive routes by lowercased path, to find conflicts; made only once a
        case-insensitive route comes (most tables have none)."""

    def clash(self, key: str, case_sensitive: bool) -> R | None:
        if case_sensitive:
            found = self.by_path.get(key)
            if found is None and self.folded:
                found = self.folded.get(key.lower())
            return found
        lower = key.lower()
        if self.lowered is None:
            self.lowered = {}
            for path, route in self.by_path.items():
                self.lowered.setdefault(path.lower(), route)
        found = self.folded.get(lower)
        return found if found is not None else self.lowered.get(lower)

    def add(self, key: str, case_sensitive: bool, route: R) -> None:
        if case_sensitive:
            self.by_path[key] = route
            if self.lowered is not None:
                self.lowered.setdefault(key.lower(), route)
        else:
            self.folded[key.lower()] = route


class _HostGroup(Generic[R]):
    __slots__ = ("choices", "exact", "folded_exact", "folded_prefix", "keys", "prefix")

    def __init__(self) -> None:
        self.choices = False
        """Whether some path holds several routes told apart by their conditions."""
        self.keys: tuple[_Keys[R], _Keys[R]] = (_Keys(), _Keys())
        """(Exact, Prefix)."""
        self.exact = self.keys[0].by_path
        self.prefix = self.keys[1].by_path
        self.folded_exact = self.keys[0].folded
        self.folded_prefix = self.keys[1].folded

    def match(self, path: str, facts: MatchFacts | None = None) -> R | None:
        if self.choices:
            return self._match_choices(path, facts)
        found = self.exact.get(path)
        if found is not None:
            return found
        if self.folded_exact or self.folded_prefix:
            return self._match_folded(path)
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

    def _match_choices(self, path: str, facts: MatchFacts | None) -> R | None:
        """As :meth:`match`, but a path whose routes all refuse the request goes on to
        the next shorter one."""
        lower = path.lower()
        for found in (self.exact.get(path), self.folded_exact.get(lower)):
            found = _pick(found, facts)
            if found is not None:
                return found
        cut = path
        while True:
            for found in (self.prefix.get(cut), self.folded_prefix.get(cut.lower())):
                found = _pick(found, facts)
                if found is not None:
                    return found
            if cut == "/":
                return None
            slash = cut.rfind("/")
            cut = "/" if slash <= 0 else cut[:slash]

    def _match_folded(self, path: str) -> R | None:
        # At most one of the two dictionaries holds a spelling of any key: see _Keys.clash.
        lower = path.lower()
        found = self.folded_exact.get(lower)
        if found is not None:
            return found
        prefixes, folded = self.prefix, self.folded_prefix
        cut, lower_cut = path, lower
        while True:
            found = prefixes.get(cut)
            if found is None:
                found = folded.get(lower_cut)
            if found is not None or cut == "/":
                return found
            slash = cut.rfind("/")
            if slash <= 0:
                cut = lower_cut = "/"
            else:
                cut, lower_cut = cut[:slash], lower_cut[:slash]


@dataclass(frozen=True, slots=True)
class Conflict:
    route: str
    other: str
    message: str


_REJECTED = {
    ENCODED_DELIMITER: "the path contains an encoded ';', '#' or '?', which is not allowed",
    DOUBLE_ENCODED: "the path contains a double percent-encoding (%25XX), which is not allowed",
}


def _action(options: PathMatch, flag: int) -> str:
    return options.encoded_delimiters if flag == ENCODED_DELIMITER else options.double_encoding


def prefix_key(path: str) -> str:
    return path.rstrip("/") or "/"


class RouteTable(Generic[R]):
    """Immutable once built; replaced as a whole when routes change."""

    __slots__ = (
        "_any",
        "_deep_wildcard",
        "_defaults",
        "_exact",
        "_options",
        "_wildcard",
        "conditional",
        "conflicts",
        "routes",
    )

    def __init__(self, routes: Iterable[R], defaults: PathMatch | None = None) -> None:
        self._exact: dict[str, _HostGroup[R]] = {}
        self._wildcard: dict[str, _HostGroup[R]] = {}
        self._deep_wildcard: dict[str, _HostGroup[R]] = {}
        """``*.`` hosts of routes with ``wildcard_depth: any``, by suffix."""
        self._any: _HostGroup[R] | None = None
        self._defaults = defaults if defaults is not None else PathMatch()
        self._options: dict[int, PathMatch] = {}
        self.conditional = False
        """Whether some routes are chosen by :class:`MatchFacts` (then pass them)."""
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
            if not host.startswith("*."):
                table = self._exact
            elif route.spec.wildcard_depth == "any":
                table = self._deep_wildcard
            else:
                table = self._wildcard
            key = host[2:] if host.startswith("*.") else host
            group = table.get(key)
            if group is None:
                group = table[key] = _HostGroup()
            groups.append(group)
        return groups

    def _add(self, route: R) -> Conflict | None:
        spec = route.spec
        options = effective_path_match(spec, self._defaults)
        groups = self._groups_for(route)
        exact = spec.path_type == "Exact"
        if not exact:
            keys = [prefix_key(spec.path)]
        elif options.exact_trailing_slash and spec.path != "/":
            bare = spec.path.rstrip("/")
            keys = [bare, bare + "/"]
        else:
            keys = [spec.path]
        case_sensitive = options.case_sensitive
        for group in groups:
            kind = group.keys[0 if exact else 1]
            for key in keys:
                existing = kind.clash(key, case_sensitive)
                if existing is None:
                    continue
                shared = kind.by_path.get(key) is existing and case_sensitive
                others = (
                    cast("_Choice[R]", existing).options
                    if type(existing) is _Choice
                    else [existing]
                )
                for other in others:
                    if not shared or _overlap(spec, other.spec):
                        return Conflict(
                            spec.name,
                            other.spec.name,
                            f"same host and {spec.path_type} path {spec.path!r} as route "
                            f"{other.spec.name!r} (with their path_match options"
                            + (", match conditions and listeners)" if shared else ")"),
                        )
        for group in groups:
            kind = group.keys[0 if exact else 1]
            for key in keys:
                existing = kind.by_path.get(key) if case_sensitive else None
                if existing is None:
                    if spec.match.conditional:  # checked even when alone on its path
                        kind.add(key, case_sensitive, cast(R, _Choice([route])))
                        group.choices = self.conditional = True
                    else:
                        kind.add(key, case_sensitive, route)
                    continue
                if type(existing) is _Choice:
                    cast("_Choice[R]", existing).add(route)
                    continue
                choice = cast(R, _Choice([existing, route]))
                kind.by_path[key] = choice
                if kind.lowered is not None and kind.lowered.get(key.lower()) is existing:
                    kind.lowered[key.lower()] = choice
                group.choices = self.conditional = True
        if options is not self._defaults:
            self._options[id(route)] = options
        return None

    def options(self, route: R) -> PathMatch:
        """The route's effective ``path_match`` options."""
        return self._options.get(id(route), self._defaults)

    def resolve(
        self, host: str, target: NormalizedTarget, facts: MatchFacts | None = None
    ) -> R | None:
        """The route for a normalized target, judging ``%3B``/``%23``/``%3F`` and ``%25XX``
        by the ``path_match`` options of the route it matches as sent and of the one it
        matches once decoded. Raises PathError when one of them rejects the encoding.

        SECURITY: a route set to ``decode`` takes every path that matches it once decoded,
        so its policy applies to the spellings a decoding backend routes to its handler.
        """
        route = self.match(host, target.match_path, facts)
        encoded = target.encoded
        if not encoded:
            return route
        decoded_path = target.decoded_match_path
        decoded = None if decoded_path is None else self.match(host, decoded_path, facts)
        flags = [flag for flag in (ENCODED_DELIMITER, DOUBLE_ENCODED) if encoded & flag]
        for candidate in (route, decoded):
            if candidate is None:
                continue
            options = self.options(candidate)
            for flag in flags:
                if _action(options, flag) == "reject":
                    raise PathError(_REJECTED[flag])
        if decoded_path is None:
            # Decoding once more yields a dot segment, slash or control: never legitimate.
            if route is not None and _action(self.options(route), DOUBLE_ENCODED) != "forward":
                raise PathError(_REJECTED[DOUBLE_ENCODED])
            return route
        if decoded is not None and decoded is not route:
            options = self.options(decoded)
            if all(_action(options, flag) == "decode" for flag in flags):
                return decoded
        return route

    def _deep_match(self, host: str, dot: int) -> _HostGroup[R] | None:
        """The most specific ``wildcard_depth: any`` wildcard covering ``host``."""
        while dot > 0:
            group = self._deep_wildcard.get(host[dot + 1 :])
            if group is not None:
                return group
            dot = host.find(".", dot + 1)
        return None

    def match(self, host: str, path: str, facts: MatchFacts | None = None) -> R | None:
        group = self._exact.get(host)
        if group is None:
            dot = host.find(".")
            if dot > 0:
                group = self._wildcard.get(host[dot + 1 :])
                if group is None and self._deep_wildcard:
                    group = self._deep_match(host, dot)
            if group is None:
                group = self._any
                if group is None:
                    return None
        return group.match(path, facts)
