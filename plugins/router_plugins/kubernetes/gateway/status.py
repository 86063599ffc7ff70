"""The status of GatewayClasses, Gateways and HTTPRoutes, written by the Lease leader.

What to write comes from the provider's last translation. Each object is compared with
its current status first (ignoring ``lastTransitionTime``) and patched only when they
differ, with a JSON merge patch on the ``status`` subresource. In an HTTPRoute's
``status.parents`` only the entries with our ``controllerName`` are ours: the others are
written back as they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from router_plugins.kubernetes.apiclient import ApiError, KubeApi
from router_plugins.kubernetes.gateway.translate import Condition, Translation
from router_plugins.kubernetes.leader import LeaderElector
from router_plugins.kubernetes.objects import Obj, items, mapping, name, namespace, text
from router_plugins.kubernetes.resources import GATEWAY_CLASSES, GATEWAYS, HTTP_ROUTES, Resource

logger = logging.getLogger("commons_router.kubernetes")


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bare(value: Any) -> Any:
    """The value without ``lastTransitionTime`` anywhere (for comparisons)."""
    if isinstance(value, dict):
        return {k: _bare(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_bare(v) for v in value]
    return value


def stamped(wanted: list[Condition], current: object, now: str) -> list[Condition]:
    """``wanted`` with ``lastTransitionTime``: kept from ``current`` when the condition's
    status did not change, else ``now``."""
    before = {text(c.get("type")): c for c in items(current)}
    result = []
    for entry in wanted:
        old = before.get(entry["type"])
        since = (
            text(old.get("lastTransitionTime"))
            if old is not None and old.get("status") == entry["status"]
            else ""
        )
        result.append({**entry, "lastTransitionTime": since or now})
    return result


def class_status(wanted: list[Condition], current: Obj, now: str) -> dict[str, Any]:
    return {"conditions": stamped(wanted, mapping(current.get("status")).get("conditions"), now)}


def gateway_addresses(published: list[dict[str, str]]) -> list[dict[str, str]]:
    """``status.addresses`` entries for the published ``ip``/``hostname`` addresses."""
    return [
        {"type": "IPAddress", "value": entry["ip"]}
        if "ip" in entry
        else {"type": "Hostname", "value": entry["hostname"]}
        for entry in published
    ]


def gateway_status(wanted: Mapping[str, Any], current: Obj, now: str) -> dict[str, Any]:
    status = mapping(current.get("status"))
    old_listeners = {text(entry.get("name")): entry for entry in items(status.get("listeners"))}
    listeners = [
        {
            **entry,
            "conditions": stamped(
                entry["conditions"],
                mapping(old_listeners.get(entry["name"])).get("conditions"),
                now,
            ),
        }
        for entry in wanted["listeners"]
    ]
    return {
        "conditions": stamped(wanted["conditions"], status.get("conditions"), now),
        "listeners": listeners,
    }


def route_status(
    ours: list[dict[str, Any]], current: Obj, controller: str, now: str
) -> dict[str, Any]:
    """``status.parents``: the other controllers' entries untouched, then ours."""
    parents = items(mapping(current.get("status")).get("parents"))
    others = [p for p in parents if text(p.get("controllerName")) != controller]
    previous = {
        repr(sorted(mapping(p.get("parentRef")).items())): p
        for p in parents
        if text(p.get("controllerName")) == controller
    }
    mine = []
    for entry in ours:
        old = mapping(previous.get(repr(sorted(entry["parentRef"].items()))))
        mine.append(
            {**entry, "conditions": stamped(entry["conditions"], old.get("conditions"), now)}
        )
    return {"parents": [*others, *mine]}


class GatewayStatusWriter:
    def __init__(
        self,
        api: KubeApi,
        elector: LeaderElector,
        controller: str,
        translations: Callable[[], Translation | None],
        translated: asyncio.Event,
        objects: Callable[[], tuple[Mapping[str, Obj], Mapping[str, Obj], Mapping[str, Obj]]],
        retry_period: float,
        addresses: Callable[[], list[dict[str, str]] | None] = lambda: None,
    ) -> None:
        self._api = api
        self._elector = elector
        self._controller = controller
        self._translation = translations
        self._translated = translated
        self._objects = objects
        self._retry_period = retry_period
        self._addresses = addresses
        """The published addresses (as for Ingress status); None: not known (yet)."""
        self._written: dict[tuple[str, str], tuple[str, Any]] = {}
        """(plural, key) -> (resource version before our write, what we wrote): until the
        watch shows the write, the object is not written again."""
        self.writes = 0

    async def run(self) -> None:
        while True:
            await self._elector.leading.wait()
            self._translated.clear()
            try:
                await self.sync()
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.warning("kubernetes: writing Gateway API status: %s; trying again", exc)
                await asyncio.sleep(self._retry_period)
                continue
            changed = self._elector.changed
            changed.clear()
            waits = [
                asyncio.ensure_future(self._translated.wait()),
                asyncio.ensure_future(changed.wait()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            if not self._elector.is_leader:
                self._written.clear()

    async def sync(self) -> None:
        translation = self._translation()
        if translation is None:
            return
        classes, gateways, routes = self._objects()
        now = now_text()
        for class_name, conditions in translation.class_status.items():
            current = classes.get(class_name)
            if current is not None:
                await self._write(GATEWAY_CLASSES, current, class_status(conditions, current, now))
        published = self._addresses()
        for gateway_key, wanted in translation.gateway_status.items():
            current = gateways.get(gateway_key)
            if current is not None:
                status = gateway_status(wanted, current, now)
                if published is not None:
                    status["addresses"] = gateway_addresses(published)
                await self._write(GATEWAYS, current, status)
        for route_key, current in routes.items():
            ours = translation.route_parents.get(route_key)
            if ours is None and not self._has_our_entry(current):
                continue
            # No longer a route of ours (its parents changed): our old entries go.
            status = route_status(ours or [], current, self._controller, now)
            await self._write(HTTP_ROUTES, current, status)

    def _has_our_entry(self, route: Obj) -> bool:
        parents = items(mapping(route.get("status")).get("parents"))
        return any(text(p.get("controllerName")) == self._controller for p in parents)

    async def _write(self, resource: Resource, current: Obj, status: dict[str, Any]) -> None:
        if not self._elector.is_leader:
            return
        old = mapping(current.get("status"))
        if all(_bare(old.get(k)) == _bare(v) for k, v in status.items()):
            return
        object_key = (resource.plural, f"{namespace(current)}/{name(current)}")
        version = text(mapping(current.get("metadata")).get("resourceVersion"))
        if self._written.get(object_key) == (version, _bare(status)):
            return  # our write is on its way
        path = f"{resource.path(namespace(current) or None)}/{name(current)}/status"
        try:
            await self._api.call(
                "PATCH", path, {"status": status}, content_type="application/merge-patch+json"
            )
        except ApiError as exc:
            if exc.status == 404:
                return
            raise
        self._written[object_key] = (version, _bare(status))
        self.writes += 1
