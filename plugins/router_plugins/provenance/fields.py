"""The provenance record of a response: router version, route and endpoint code version,
as an RFC 8941 dictionary (the header) and as a dict (the access log).

Records are built once per (route, endpoint version) and cached: nothing here runs per
request except a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from router_plugins.provenance.signing import sf_string

HEADER_KEYS = {"repository": "repo"}
"""Version fields renamed in the header; the others keep their names."""
BOOLEAN_FIELDS = frozenset({"dirty"})
MAX_VALUE_LENGTH = 512
_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class RouterCode:
    """The router's own code: version, commit, and the image digest once known."""

    version: str
    commit: str
    dirty: bool | None = None
    image_digest: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    header: str
    """The header value, e.g. ``repo="…", commit="…", route="app", router="0.1.0"``."""
    fields: Mapping[str, str | bool]
    """The same, as a mapping (header key -> value), for logs, spans and the page."""


def _key(name: str) -> str:
    return HEADER_KEYS.get(name, name)


def build_record(
    version: Mapping[str, str] | None,
    route: str | None,
    router: RouterCode,
    published: Sequence[str],
) -> Record:
    fields: dict[str, str | bool] = {}
    if version:
        for name in published:
            text = version.get(name)
            if not text:
                continue
            if name in BOOLEAN_FIELDS:
                fields[_key(name)] = text.strip().lower() in ("true", "1", "yes")
            else:
                fields[_key(name)] = text[:MAX_VALUE_LENGTH]
    if route is not None:
        fields["route"] = route
    fields["router"] = router.version
    fields["router-commit"] = router.commit
    if router.dirty:
        fields["router-dirty"] = True
    if router.image_digest:
        fields["router-image-digest"] = router.image_digest
    parts = []
    for key, value in fields.items():
        if isinstance(value, bool):
            parts.append(key if value else f"{key}=?0")
        else:
            parts.append(f"{key}={sf_string(value)}")
    return Record(", ".join(parts), fields)


class RecordCache:
    """Records by route and endpoint version object (version maps are replaced, never
    changed, so identity is a safe key while the cache holds a reference)."""

    __slots__ = ("_entries", "_last", "_published", "_router")

    def __init__(self, router: RouterCode, published: Sequence[str]) -> None:
        self._router = router
        self._published = tuple(published)
        self._entries: dict[tuple[str | None, int], tuple[Any, Record]] = {}
        self._last: tuple[str | None, Any, Record] | None = None
        """The latest record asked for: most requests ask for the same one again."""

    def set_router_image(self, digest: str) -> None:
        """The router's image digest became known: records built before lack it."""
        self._router = replace(self._router, image_digest=digest)
        self._entries = {}
        self._last = None

    def get(self, route: str | None, version: Mapping[str, str] | None) -> Record:
        last = self._last
        if last is not None and last[1] is version and last[0] == route:
            return last[2]
        record = self._lookup(route, version)
        self._last = (route, version, record)
        return record

    def _lookup(self, route: str | None, version: Mapping[str, str] | None) -> Record:
        key = (route, id(version))
        entry = self._entries.get(key)
        if entry is not None and entry[0] is version:
            return entry[1]
        record = build_record(version, route, self._router, self._published)
        if len(self._entries) >= _CACHE_LIMIT:
            self._entries.clear()
        self._entries[key] = (version, record)
        return record
