"""``RouterPolicy`` (``commons-router.io/v1alpha1``): our per-route plugin settings, named by
an HTTPRoute rule's ``ExtensionRef`` filter.

Its ``spec`` holds the blocks of a route's ``plugins:`` in the router's config (``auth``,
``ip_filter``), checked with the same models the config is checked with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from router_plugins.auth import RouteAuth
from router_plugins.ip_filter import IpRules
from router_plugins.kubernetes.objects import Obj, mapping, text

POLICY_GROUP = "commons-router.io"
POLICY_KIND = "RouterPolicy"
POLICY_PLUGINS: Mapping[str, type[BaseModel]] = {"auth": RouteAuth, "ip_filter": IpRules}


class PolicyRefused(Exception):
    """An ``ExtensionRef`` that cannot be resolved: reason and message for ResolvedRefs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PolicyInvalid(ValueError):
    """A RouterPolicy whose settings the router cannot use."""


def policy_plugins(
    ref: Obj,
    route_namespace: str,
    policies: Mapping[str, Obj],
    settings: Callable[[Obj], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``plugins`` block an ``extensionRef`` gives (a RouterPolicy of the route's
    namespace, read by ``settings``, :func:`policy_settings` by default); raises
    :class:`PolicyRefused` or :class:`PolicyInvalid`."""
    group, kind, policy_name = (text(ref.get(k)) for k in ("group", "kind", "name"))
    if group != POLICY_GROUP or kind != POLICY_KIND:
        raise PolicyRefused("InvalidKind", f"extensionRef kind {group}/{kind} is not supported")
    policy = policies.get(f"{route_namespace}/{policy_name}")
    if policy is None:
        raise PolicyRefused("BackendNotFound", f"RouterPolicy {policy_name!r} not found")
    return (settings or policy_settings)(policy)


def policy_settings(policy: Obj) -> dict[str, Any]:
    """The plugin blocks of a RouterPolicy, validated; raises :class:`PolicyInvalid`."""
    spec = mapping(policy.get("spec"))
    where = f"RouterPolicy {text(mapping(policy.get('metadata')).get('name'))!r}"
    if not spec:
        raise PolicyInvalid(f"{where}: spec sets none of {', '.join(POLICY_PLUGINS)}")
    unknown = sorted(set(spec) - set(POLICY_PLUGINS))
    if unknown:
        raise PolicyInvalid(
            f"{where}: unknown field spec.{unknown[0]} (known: {', '.join(POLICY_PLUGINS)})"
        )
    plugins: dict[str, Any] = {}
    for plugin_name, model in POLICY_PLUGINS.items():
        if plugin_name not in spec:
            continue
        raw = spec[plugin_name]
        try:
            model.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            at = ".".join(str(part) for part in (plugin_name, *error["loc"]))
            raise PolicyInvalid(f"{where}: spec.{at}: {error['msg']}") from None
        plugins[plugin_name] = raw
    return plugins
