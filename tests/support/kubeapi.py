"""A Kubernetes API server for tests, speaking the real wire protocol.

It serves list and watch for the resources it knows, the way kube-apiserver does:
JSON lists with ``metadata.resourceVersion`` and ``continue`` (pages of ``limit``),
newline-delimited watch events (``ADDED``/``MODIFIED``/``DELETED``/``BOOKMARK``/``ERROR``)
from a resource version, ``timeoutSeconds``, label selectors, and bearer-token auth.
It also serves single objects: ``get``, ``create`` and ``update`` (with the
``resourceVersion`` check: a stale one gets 409 Conflict) — the Leases of leader
election — and JSON merge patches of the ``status`` subresource (Ingress status).
Objects are validated as the real API server does (:mod:`tests.support.kubevalidation`):
what it would refuse, such as an EndpointSlice address in 127.0.0.0/8, raises (or gets a
422 over the wire). With ``granted`` it enforces RBAC (a call outside the set gets 403;
namespaces are not told apart), and ``users`` gives several clients tokens of their own,
so tests can tell who made each call. Tests drive it: apply and delete objects, send
bookmarks, compact the history (so older versions get a 410, as an ``ERROR`` event inside
the 200 stream), drop watch connections, and fail the next requests with a given status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from router.testing import Backend, run_backend
from tests.support.kubevalidation import Invalid, validate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kubernetes"

KINDS: dict[str, tuple[str, str, str, bool]] = {
    # kind: (group, version, plural, namespaced)
    "Ingress": ("networking.k8s.io", "v1", "ingresses", True),
    "IngressClass": ("networking.k8s.io", "v1", "ingressclasses", False),
    "Service": ("", "v1", "services", True),
    "EndpointSlice": ("discovery.k8s.io", "v1", "endpointslices", True),
    "Pod": ("", "v1", "pods", True),
    "Lease": ("coordination.k8s.io", "v1", "leases", True),
    "Secret": ("", "v1", "secrets", True),
    "Namespace": ("", "v1", "namespaces", False),
    "GatewayClass": ("gateway.networking.k8s.io", "v1", "gatewayclasses", False),
    "Gateway": ("gateway.networking.k8s.io", "v1", "gateways", True),
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes", True),
    "ReferenceGrant": ("gateway.networking.k8s.io", "v1beta1", "referencegrants", True),
    "RouterPolicy": ("commons-router.io", "v1alpha1", "routerpolicies", True),
}
_REASONS = {
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}
NAME_SELECTOR = "\0metadata.name"
"""Kept with the label selector under a key no label can have."""
PLURALS = {plural: (group, kind) for kind, (group, _, plural, _) in KINDS.items()}


def load_objects(name: str) -> list[dict[str, Any]]:
    """Every object of a multi-document YAML fixture."""
    text = (FIXTURES / name).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


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
    verb: str  # list | watch | get | create | update | patch
    group: str
    resource: str
    """The plural, or ``plural/subresource`` (``ingresses/status``)."""
    namespace: str | None
    params: dict[str, str] = field(default_factory=dict, compare=False)
    user: str = field(default="", compare=False)
    """Whose token it was (see :attr:`KubeApiServer.users`)."""


@dataclass
class _Watch:
    plural: str
    namespace: str | None
    selector: dict[str, str]
    queue: asyncio.Queue[dict[str, Any] | str | bytes] = field(default_factory=asyncio.Queue)


USER = web.RequestKey("user", str)
Grant = tuple[str, str, str]
"""``(API group, resource or resource/subresource, verb)`` as RBAC rules name them."""


class KubeApiServer:
    def __init__(self, token: str = "test-token", granted: set[Grant] | None = None) -> None:
        self.token = token
        self.users: dict[str, str] = {}
        """More bearer tokens, each with a user name (recorded with every call)."""
        self.granted = granted
        """With a set: RBAC — a call outside it gets 403 Forbidden."""
        self.forbidden: list[Call] = []
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
        self._failures: list[tuple[int, str | None]] = []
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
            validate(obj, existing)
            self.revision += 1
            meta["resourceVersion"] = str(self.revision)
            meta.setdefault("uid", f"00000000-0000-4000-8000-{next(self._uids):012d}")
            meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            if existing is not None:
                # As the API server does: a spec change bumps the generation, status does not.
                old_generation = existing["metadata"].get("generation", 1)
                changed = obj.get("spec") != existing.get("spec")
                meta["generation"] = old_generation + 1 if changed else old_generation
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

    def fail_next(self, count: int, code: int = 503, verb: str | None = None) -> None:
        """Answer the next ``count`` requests (of ``verb``: list or watch; None: any) with
        an error Status of ``code``, as an API server does while it (re)starts."""
        self._failures.extend([(code, verb)] * count)

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
            app.router.add_post(prefix + "/namespaces/{namespace}/{plural}", self._create)
            one = prefix + "/namespaces/{namespace}/{plural}/{name}"
            app.router.add_get(one, self._get)
            app.router.add_put(one, self._update)
            app.router.add_patch(one + "/status", self._patch_status)
            app.router.add_patch(prefix + "/{plural}/{name}/status", self._patch_status)
        return app

    # --- single objects: get, create, update, the status subresource ------------------------

    def _target(self, request: web.Request) -> tuple[str, str, str] | web.Response:
        plural = request.match_info["plural"]
        group = request.match_info.get("group", "")
        if plural not in PLURALS or PLURALS[plural][0] != group:
            return web.json_response(status(404, "NotFound", "no such resource"), status=404)
        return group, plural, request.match_info.get("namespace", "")

    def _injected(self, request: web.Request, verb: str) -> web.Response | None:
        """The error answer :meth:`fail_next` asked for, if this request is to get one."""
        for index, (code, failing_verb) in enumerate(self._failures):
            if failing_verb in (None, verb):
                del self._failures[index]
                return web.json_response(status(code, _REASONS[code], "injected"), status=code)
        return None

    async def _get(self, request: web.Request) -> web.Response:
        target = self._target(request)
        if isinstance(target, web.Response):
            return target
        group, plural, namespace = target
        refused = self._record(request, Call("get", group, plural, namespace))
        if refused is not None:
            return refused
        injected = self._injected(request, "get")
        if injected is not None:
            return injected
        obj = self.objects[plural].get(f"{namespace}/{request.match_info['name']}")
        if obj is None:
            message = f'{plural} "{request.match_info["name"]}" not found'
            return web.json_response(status(404, "NotFound", message), status=404)
        return web.json_response(obj)

    async def _write(
        self, request: web.Request, verb: str, obj: dict[str, Any]
    ) -> web.Response:
        """Validate and store ``obj`` (create, or update with a matching resourceVersion)."""
        plural = request.match_info["plural"]
        namespace = request.match_info.get("namespace", "")
        meta = obj.setdefault("metadata", {})
        if namespace:
            meta["namespace"] = namespace
        key = f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))
        existing = self.objects[plural].get(key)
        if verb == "create" and existing is not None:
            message = f'{plural} "{meta.get("name")}" already exists'
            return web.json_response(status(409, "AlreadyExists", message), status=409)
        if verb == "update":
            if existing is None:
                return web.json_response(status(404, "NotFound", "not found"), status=404)
            if meta.get("resourceVersion") != existing["metadata"]["resourceVersion"]:
                message = "the object has been modified; please apply your changes to the latest"
                return web.json_response(status(409, "Conflict", message), status=409)
            meta["uid"] = existing["metadata"]["uid"]
            meta["creationTimestamp"] = existing["metadata"]["creationTimestamp"]
        else:
            meta.pop("resourceVersion", None)
        obj["kind"] = PLURALS[plural][1]
        try:
            self.apply(obj)
        except Invalid as exc:
            return web.json_response(status(422, "Invalid", str(exc)), status=422)
        return web.json_response(self.objects[plural][key], status=201 if verb == "create" else 200)

    async def _create(self, request: web.Request) -> web.Response:
        target = self._target(request)
        if isinstance(target, web.Response):
            return target
        group, plural, namespace = target
        refused = self._record(request, Call("create", group, plural, namespace))
        if refused is not None:
            return refused
        return await self._write(request, "create", await request.json())

    async def _update(self, request: web.Request) -> web.Response:
        target = self._target(request)
        if isinstance(target, web.Response):
            return target
        group, plural, namespace = target
        refused = self._record(request, Call("update", group, plural, namespace))
        if refused is not None:
            return refused
        injected = self._injected(request, "update")
        if injected is not None:
            return injected
        obj = await request.json()
        if obj.get("metadata", {}).get("name") != request.match_info["name"]:
            return web.json_response(status(400, "BadRequest", "name mismatch"), status=400)
        if plural == "ingresses":
            return web.json_response(status(405, "MethodNotAllowed", "not here"), status=405)
        return await self._write(request, "update", obj)

    async def _patch_status(self, request: web.Request) -> web.Response:
        """A JSON merge patch of ``status`` (the status subresource ignores the rest)."""
        target = self._target(request)
        if isinstance(target, web.Response):
            return target
        group, plural, namespace = target
        refused = self._record(request, Call("patch", group, plural + "/status", namespace))
        if refused is not None:
            return refused
        if request.content_type != "application/merge-patch+json":
            return web.json_response(status(415, "UnsupportedMediaType", "use merge patch"), 415)
        object_name = request.match_info["name"]
        existing = self.objects[plural].get(
            f"{namespace}/{object_name}" if namespace else object_name
        )
        if existing is None:
            return web.json_response(status(404, "NotFound", "not found"), status=404)
        patch = await request.json()
        obj = copy.deepcopy(existing)
        obj["status"] = merge_patch(obj.get("status") or {}, patch.get("status") or {})
        return await self._write(request, "update", obj)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        tokens = {self.token: "router", **self.users}
        user = next((u for t, u in tokens.items() if given == f"Bearer {t}"), None)
        if user is None:
            self.unauthorized += 1
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        request[USER] = user
        response: web.StreamResponse = await handler(request)
        return response

    def _record(self, request: web.Request, call: Call) -> web.Response | None:
        """Record the call; a 403 answer when RBAC does not grant it."""
        call = dataclasses.replace(call, user=request.get(USER, ""))
        if self.granted is not None and (call.group, call.resource, call.verb) not in self.granted:
            self.forbidden.append(call)
            message = (
                f'{call.resource} is forbidden: cannot {call.verb} in API group "{call.group}"'
            )
            return web.json_response(status(403, "Forbidden", message), status=403)
        self.calls.append(call)
        return None

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
        verb = "watch" if request.query.get("watch") in ("1", "true") else "list"
        injected = self._injected(request, verb)
        if injected is not None:
            self.calls.append(Call("failed " + verb, group, plural, namespace))
            return injected
        refused = self._record(request, Call(verb, group, plural, namespace, dict(request.query)))
        if refused is not None:
            return refused
        if verb == "watch":
            return await self._watch(request, plural, namespace, selector)
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
    fixtures: Iterable[str] = (), token: str = "test-token", granted: set[Grant] | None = None
) -> AsyncIterator[tuple[KubeApiServer, Backend]]:
    server = KubeApiServer(token, granted)
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
