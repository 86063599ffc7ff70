"""A Kubernetes API server for tests, speaking the real wire protocol.

It serves list and watch for the resources it knows, the way kube-apiserver does:
JSON lists with ``metadata.resourceVersion`` and ``continue`` (pages of ``limit``),
newline-delimited watch events (``ADDED``/``MODIFIED``/``DELETED``/``BOOKMARK``/``ERROR``)
from a resource version, ``timeoutSeconds``, label selectors, and bearer-token auth. Tests
drive it: apply and delete objects, send bookmarks, compact the history (so older versions
get a 410, as an ``ERROR`` event inside the 200 stream), and drop watch connections.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from router.testing import Backend, run_backend

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kubernetes"

KINDS: dict[str, tuple[str, str, str, bool]] = {
    # kind: (group, version, plural, namespaced)
    "Ingress": ("networking.k8s.io", "v1", "ingresses", True),
    "IngressClass": ("networking.k8s.io", "v1", "ingressclasses", False),
    "Service": ("", "v1", "services", True),
    "EndpointSlice": ("discovery.k8s.io", "v1", "endpointslices", True),
    "Pod": ("", "v1", "pods", True),
    "Secret": ("", "v1", "secrets", True),
}
NAME_SELECTOR = "\0metadata.name"
"""Kept with the label selector under a key no label can have."""
PLURALS = {plural: (group, kind) for kind, (group, _, plural, _) in KINDS.items()}


def load_objects(name: str) -> list[dict[str, Any]]:
    """Every object of a multi-document YAML fixture."""
    text = (FIXTURES / name).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass(frozen=True)
class Call:
    verb: str  # list | watch
    group: str
    resource: str
    namespace: str | None
    params: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass
class _Watch:
    plural: str
    namespace: str | None
    selector: dict[str, str]
    queue: asyncio.Queue[dict[str, Any] | str | bytes] = field(default_factory=asyncio.Queue)


class KubeApiServer:
    def __init__(self, token: str = "test-token") -> None:
        self.token = token
        self.objects: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in PLURALS}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []
        self.revision = 100
        self.compacted = 0
        """Watches from a version at or below this get 410 Expired."""
        self.calls: list[Call] = []
        self.watches: list[_Watch] = []
        self.unauthorized = 0
        self.expire_as_response = False
        """Answer a stale watch with an HTTP 410 instead of an ERROR event in a 200 stream."""
        self._snapshots: dict[str, list[dict[str, Any]]] = {}
        self._expire_next_continue = False
        self._uids = itertools.count(1)

    # --- driving the server -------------------------------------------------------------

    def apply(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            obj = copy.deepcopy(obj)
            plural = KINDS[obj["kind"]][2]
            meta = obj.setdefault("metadata", {})
            key = self._key(meta)
            existing = self.objects[plural].get(key)
            self.revision += 1
            meta["resourceVersion"] = str(self.revision)
            meta.setdefault("uid", f"00000000-0000-4000-8000-{next(self._uids):012d}")
            meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            meta.setdefault("generation", 1)
            self.objects[plural][key] = obj
            self._emit(plural, "MODIFIED" if existing else "ADDED", obj)

    def apply_fixture(self, name: str) -> None:
        self.apply(*load_objects(name))

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        plural = KINDS[kind][2]
        obj = self.objects[plural].pop(f"{namespace}/{name}" if namespace else name)
        self.revision += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self._emit(plural, "DELETED", obj)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        plural = KINDS[kind][2]
        return copy.deepcopy(self.objects[plural][f"{namespace}/{name}" if namespace else name])

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current version to every open watch."""
        self.revision += 1
        for watch in self.watches:
            group, kind = PLURALS[watch.plural]
            api_version = f"{group}/v1" if group else "v1"
            watch.queue.put_nowait(
                {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": kind,
                        "apiVersion": api_version,
                        "metadata": {"resourceVersion": str(self.revision)},
                    },
                }
            )

    def compact(self, notify: bool = True) -> None:
        """Forget the history. With ``notify`` every open watch gets a 410 ERROR event and
        ends; without, only watches started from an older version get the 410."""
        self.compacted = self.revision
        self.history.clear()
        if not notify:
            return
        for watch in self.watches:
            watch.queue.put_nowait(
                {
                    "type": "ERROR",
                    "object": status(
                        410, "Expired", "too old resource version: 1 (" + str(self.revision) + ")"
                    ),
                }
            )
            watch.queue.put_nowait("END")

    def send_raw(self, line: bytes) -> None:
        """Write ``line`` as it is into every open watch stream (e.g. broken JSON)."""
        for watch in self.watches:
            watch.queue.put_nowait(line)

    def send_error(self, code: int, reason: str, message: str) -> None:
        """An ERROR event with this Status in every open watch stream."""
        for watch in self.watches:
            watch.queue.put_nowait({"type": "ERROR", "object": status(code, reason, message)})

    def drop_watches(self) -> None:
        """Cut every open watch connection without ending the response properly."""
        for watch in self.watches:
            watch.queue.put_nowait("DROP")

    def close_watches(self) -> None:
        """End every open watch normally (so the server can shut down at once)."""
        for watch in self.watches:
            watch.queue.put_nowait("END")

    def expire_continue_tokens(self) -> None:
        """Every ``continue`` token handed out so far is now too old (410 Expired)."""
        self._snapshots.clear()

    def expire_next_continue_token(self) -> None:
        """The next request with a ``continue`` token gets 410 Expired (as when the list
        took longer than the server keeps its snapshot)."""
        self._expire_next_continue = True

    def calls_of(self, verb: str) -> list[Call]:
        return [call for call in self.calls if call.verb == verb]

    # --- the API ---------------------------------------------------------------------------

    @staticmethod
    def _key(meta: dict[str, Any]) -> str:
        ns = meta.get("namespace")
        return f"{ns}/{meta['name']}" if ns else meta["name"]

    def _emit(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        self.history.append((self.revision, plural, kind, obj))
        for watch in self.watches:
            if watch.plural == plural and self._selected(obj, watch.namespace, watch.selector):
                watch.queue.put_nowait({"type": kind, "object": obj})

    @staticmethod
    def _selected(obj: dict[str, Any], namespace: str | None, selector: dict[str, str]) -> bool:
        meta = obj["metadata"]
        if namespace is not None and meta.get("namespace") != namespace:
            return False
        labels = meta.get("labels") or {}
        return all(
            (meta.get("name") if k == NAME_SELECTOR else labels.get(k)) == v
            for k, v in selector.items()
        )

    @staticmethod
    def _parse_selector(text: str) -> dict[str, str]:
        selector = {}
        for part in filter(None, text.split(",")):
            name, _, value = part.partition("=")
            selector[name.strip()] = value.strip().lstrip("=")
        return selector

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            app.router.add_get(prefix + "/{plural}", self._handle)
            app.router.add_get(prefix + "/namespaces/{namespace}/{plural}", self._handle)
            app.router.add_get(prefix + "/namespaces/{namespace}/{plural}/{name}", self._get_one)
        return app

    async def _get_one(self, request: web.Request) -> web.StreamResponse:
        plural, name = request.match_info["plural"], request.match_info["name"]
        namespace = request.match_info["namespace"]
        group = request.match_info.get("group", "")
        self.calls.append(Call("get", group, plural, namespace, dict(request.query)))
        if plural not in PLURALS or PLURALS[plural][0] != group:
            return web.json_response(
                status(404, "NotFound", "the server could not find it"), status=404
            )
        obj = self.objects[plural].get(f"{namespace}/{name}")
        if obj is None:
            return web.json_response(
                status(404, "NotFound", f'{plural} "{name}" not found'), status=404
            )
        return web.Response(body=orjson.dumps(obj), content_type="application/json")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.unauthorized += 1
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        plural = request.match_info["plural"]
        group = request.match_info.get("group", "")
        if plural not in PLURALS or PLURALS[plural][0] != group:
            return web.json_response(
                status(404, "NotFound", "the server could not find it"), status=404
            )
        namespace = request.match_info.get("namespace")
        selector = self._parse_selector(request.query.get("labelSelector", ""))
        fields = self._parse_selector(request.query.get("fieldSelector", ""))
        if set(fields) - {"metadata.name"}:
            return web.json_response(
                status(400, "BadRequest", "only metadata.name field selectors are served"),
                status=400,
            )
        if "metadata.name" in fields:
            selector[NAME_SELECTOR] = fields["metadata.name"]
        if request.query.get("watch") in ("1", "true"):
            self.calls.append(Call("watch", group, plural, namespace, dict(request.query)))
            return await self._watch(request, plural, namespace, selector)
        self.calls.append(Call("list", group, plural, namespace, dict(request.query)))
        return self._list(request, plural, namespace, selector)

    def _list(
        self, request: web.Request, plural: str, namespace: str | None, selector: dict[str, str]
    ) -> web.Response:
        limit = int(request.query.get("limit", "0") or 0)
        token = request.query.get("continue")
        if token and self._expire_next_continue:
            self._expire_next_continue = False
            self.expire_continue_tokens()
        if token:
            snapshot_id, _, offset_text = base64.urlsafe_b64decode(token).decode().partition(":")
            snapshot = self._snapshots.get(snapshot_id)
            if snapshot is None:
                return web.json_response(
                    status(410, "Expired", "The provided continue parameter is too old"),
                    status=410,
                )
            offset, version = int(offset_text), snapshot_id.split("/")[0]
        else:
            version = str(self.revision)
            snapshot = [
                copy.deepcopy(obj)
                for _, obj in sorted(self.objects[plural].items())
                if self._selected(obj, namespace, selector)
            ]
            snapshot_id = f"{version}/{len(self._snapshots)}"
            self._snapshots[snapshot_id] = snapshot
            offset = 0
        end = offset + limit if limit else len(snapshot)
        meta: dict[str, Any] = {"resourceVersion": version}
        if end < len(snapshot):
            meta["continue"] = base64.urlsafe_b64encode(f"{snapshot_id}:{end}".encode()).decode()
            meta["remainingItemCount"] = len(snapshot) - end
        group, kind = PLURALS[plural]
        body = {
            "kind": f"{kind}List",
            "apiVersion": f"{group}/v1" if group else "v1",
            "metadata": meta,
            "items": snapshot[offset:end],
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _watch(
        self, request: web.Request, plural: str, namespace: str | None, selector: dict[str, str]
    ) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion", "0") or 0)
        timeout = float(request.query.get("timeoutSeconds", "1800"))
        expired = since <= self.compacted
        if expired and self.expire_as_response:
            return web.json_response(status(410, "Expired", "too old resource version"), status=410)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if expired:
            event = {
                "type": "ERROR",
                "object": status(410, "Expired", f"too old resource version: {since}"),
            }
            await response.write(orjson.dumps(event) + b"\n")
            return response
        watch = _Watch(plural, namespace, selector)
        for revision, event_plural, kind, obj in self.history:
            if (
                revision > since
                and event_plural == plural
                and self._selected(obj, namespace, selector)
            ):
                watch.queue.put_nowait({"type": kind, "object": obj})
        self.watches.append(watch)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    item = await watch.queue.get()
                    if item == "END":
                        break
                    if item == "DROP":
                        assert request.transport is not None
                        request.transport.abort()
                        return response
                    if isinstance(item, bytes):
                        await response.write(item)
                        continue
                    await response.write(orjson.dumps(item) + b"\n")
        except TimeoutError:
            pass
        except ConnectionError:
            return response
        finally:
            self.watches.remove(watch)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def run_kube_api(
    fixtures: Iterable[str] = (), token: str = "test-token"
) -> AsyncIterator[tuple[KubeApiServer, Backend]]:
    server = KubeApiServer(token)
    for name in fixtures:
        server.apply_fixture(name)
    async with run_backend(server.app()) as backend:
        try:
            yield server, backend
        finally:
            server.close_watches()


def kubeconfig(path: Path, server_url: str, token: str = "test-token") -> Path:
    """A kubeconfig file for ``server_url`` with a bearer token."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": server_url}}],
                "users": [{"name": "router", "user": {"token": token}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "router"}}],
                "current-context": "test",
            }
        )
    )
    return path
