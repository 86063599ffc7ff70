"""Small, total accessors for Kubernetes objects as decoded JSON (no client models)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Obj = Mapping[str, Any]


_EMPTY: Obj = {}


# Decoded JSON holds plain dicts; checking for dict (not the Mapping ABC) is much faster.
def mapping(value: object) -> Obj:
    return value if isinstance(value, dict) else _EMPTY


def items(value: object) -> list[Obj]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def strings(value: object) -> list[str]:
    """The non-empty strings of a list (nothing for anything else)."""
    return (
        [item for item in value if isinstance(item, str) and item]
        if isinstance(value, list)
        else []
    )


def text(value: object) -> str:
    return value if isinstance(value, str) else ""


def meta(obj: Obj) -> Obj:
    return mapping(obj.get("metadata"))


def name(obj: Obj) -> str:
    return text(meta(obj).get("name"))


def namespace(obj: Obj) -> str:
    return text(meta(obj).get("namespace"))


def key(obj: Obj) -> str:
    """``namespace/name`` (just ``name`` for cluster-scoped objects)."""
    ns = namespace(obj)
    return f"{ns}/{name(obj)}" if ns else name(obj)


def labels_of(obj: Obj) -> Mapping[str, str]:
    return {k: v for k, v in mapping(meta(obj).get("labels")).items() if isinstance(v, str)}


def annotations_of(obj: Obj) -> Mapping[str, str]:
    return {k: v for k, v in mapping(meta(obj).get("annotations")).items() if isinstance(v, str)}


def resource_version(obj: Obj) -> str:
    return text(meta(obj).get("resourceVersion"))
