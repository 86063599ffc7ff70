"""List, then watch, one resource, keeping a local copy of its objects.

The protocol, exactly: a paged list (``limit``/``continue``) gives the objects and a
resource version; a watch from that version gives the changes; ``BOOKMARK`` events move
the version; when the server ends the stream (``timeoutSeconds``) the watch resumes from
the last version. A 410 (an ``ERROR`` event inside the 200 stream, or a 410 answer) means
the version is too old: relist and resume from the new list's version, never re-watch
from the stale one. Any other failure retries after a jittered, growing delay; the local
copy (and so the routes built from it) is kept meanwhile. A complete list or a watch
that delivers an event shows the server works again: the delay starts small again, so
one outage does not slow the recovery from the next.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import aiohttp

from router_plugins.kubernetes.apiclient import ApiError, Expired, KubeApi, status_error
from router_plugins.kubernetes.objects import Obj, key, mapping, resource_version, text
from router_plugins.kubernetes.resources import Resource

logger = logging.getLogger("commons_router.kubernetes")

FORBIDDEN_RETRIES = 10
"""A 403 after access worked: retried this many times at the first, short delay (an API
server that just restarted refuses requests until its authorizer has loaded the RBAC
objects) before it counts as a permission problem."""

T = TypeVar("T")


class Backoff:
    """Full-jitter exponential backoff."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (1 << self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311

    def reset(self) -> None:
        self.attempt = 0


class Reflector(Generic[T]):
    def __init__(
        self,
        api: KubeApi,
        resource: Resource,
        namespace: str | None,
        transform: Callable[[Obj], T],
        on_change: Callable[[str | None], None],
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
    ) -> None:
        self.api = api
        self.resource = resource
        self.path = resource.path(namespace)
        self.transform = transform
        self.on_change = on_change
        """Called with the key of each changed object; None after a (re)list."""
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.store: dict[str, T] = {}
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.lists = 0
        """Completed lists (the first one and every relist), for metrics and tests."""
        self._forbidden = 0
        """403s in a row since access last worked."""

    def _params(self) -> dict[str, str]:
        params = {"labelSelector": self.label_selector} if self.label_selector else {}
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    async def run(self) -> None:
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self.relist()
                    self._worked()
                version = await self.watch(version)
                self.backoff.reset()
            except Expired as exc:
                logger.info("%s: resource version expired (%s); relisting", self.path, exc)
                version = None
                await asyncio.sleep(random.uniform(0, 0.2))  # noqa: S311
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                if version is not None:
                    version = self.resource_version  # resume after the last event seen
                if self._transient_forbidden(exc):
                    delay = self.backoff.initial
                    logger.warning(
                        "%s: %s, although access worked before: the API server may still be "
                        "loading its authorization after a restart; keeping the last known "
                        "state, retry %d of %d in %.1fs",
                        self.path,
                        exc,
                        self._forbidden,
                        FORBIDDEN_RETRIES,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                delay = self.backoff.next_delay()
                logger.warning(
                    "%s: %s; keeping the last known state, retrying in %.1fs",
                    self.path,
                    describe(exc),
                    delay,
                )
                await asyncio.sleep(delay)
            except Exception:
                # A bug or an object shaped in a way nobody foresaw: never stop watching.
                if version is not None:
                    version = self.resource_version
                delay = self.backoff.next_delay()
                logger.exception("%s: unexpected failure; retrying in %.1fs", self.path, delay)
                await asyncio.sleep(delay)

    def _worked(self) -> None:
        """The server answered as it should: the next failure is retried soon."""
        self.backoff.reset()
        self._forbidden = 0

    def _transient_forbidden(self, exc: BaseException) -> bool:
        """A 403 after access worked, and not yet too many in a row."""
        if not (isinstance(exc, ApiError) and exc.status == 403 and self.lists):
            return False
        self._forbidden += 1
        return self._forbidden <= FORBIDDEN_RETRIES

    async def relist(self) -> str:
        """Replace the store with a fresh, paged list; returns its resource version."""
        objects: dict[str, T] = {}
        params = {**self._params(), "limit": str(self.page_size)}
        while True:
            page = await self.api.list_page(self.path, params, deadline=60)
            for item in page.get("items") or []:
                if isinstance(item, dict):
                    objects[key(item)] = self.transform(item)
            list_meta = mapping(page.get("metadata"))
            version = text(list_meta.get("resourceVersion"))
            token = text(list_meta.get("continue"))
            if not token:
                break
            params = {**self._params(), "limit": str(self.page_size), "continue": token}
        if not version:
            raise ApiError(0, "list answer has no metadata.resourceVersion")
        self.store = objects
        self.resource_version = version
        self.lists += 1
        self.synced.set()
        self.on_change(None)
        return version

    async def watch(self, version: str) -> str:
        """Apply watch events until the server ends the stream; returns the last version."""
        params = {
            **self._params(),
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_timeout),
        }
        started = time.monotonic()
        events = 0
        async for event in self.api.watch(self.path, params, idle_timeout=self.watch_timeout + 30):
            if not events:
                self._worked()  # the watch is live
            events += 1
            kind = text(event.get("type"))
            obj = mapping(event.get("object"))
            if kind == "ERROR":
                raise status_error(obj)
            new_version = resource_version(obj)
            if kind in ("ADDED", "MODIFIED"):
                obj_key = key(obj)
                self.store[obj_key] = self.transform(obj)
                self.on_change(obj_key)
            elif kind == "DELETED":
                obj_key = key(obj)
                if self.store.pop(obj_key, None) is not None:
                    self.on_change(obj_key)
            elif kind != "BOOKMARK":
                raise ApiError(0, f"unknown watch event type {kind!r}")
            if new_version:
                version = new_version
                self.resource_version = version
        if events == 0 and time.monotonic() - started < 1.0:
            # A stream that ends at once without events is a failure, not a timeout.
            raise ApiError(0, "watch ended immediately")
        return version


def describe(exc: BaseException) -> str:
    """One plain line for a failed call: what happened, never an object's repr, and no
    number that reads like an HTTP status when there was none."""
    if isinstance(exc, ApiError):
        if exc.status == 401:
            return f"{exc} (the credentials were refused: check the service account token)"
        if exc.status == 403:
            return f"{exc} (access refused: check the service account and its ClusterRole)"
        return str(exc)
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        reason = getattr(error, "verify_message", None) or getattr(error, "reason", None)
        return (
            f"TLS: the certificate of {exc.host}:{exc.port} is not trusted "
            f"({reason or error.__class__.__name__})"
        )
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake with {exc.host}:{exc.port} failed ({exc.os_error.strerror})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or 'refused'})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the API server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the connection closed before the end of the response (the stream was cut off)"
    return f"{exc.__class__.__name__}: {exc}"
