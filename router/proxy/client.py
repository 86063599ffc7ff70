"""The HTTP/1.1 client the router forwards with: keep-alive pools per upstream origin.

Why not aiohttp's ClientSession: per request it builds a URL, a request object, cookie,
redirect and proxy machinery, trace hooks and a stream reader, none of which a proxy
uses, and that made up a third of the router's CPU time per request. Here a request is
one head serialized (proxy/wire.py) and written in one call on a pooled connection
(proxy/connection.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Final, TypeVar

from router.proxy.connection import UpstreamConnection, UpstreamResponse
from router.proxy.tunnel import UpstreamTunnel
from router.proxy.wire import ConnectFailed, Disconnected, Origin, UpstreamTimeouts, request_head

_SWEEP_INTERVAL: Final = 5.0
_METHODS_WITH_BODY: Final = frozenset({"POST", "PUT", "PATCH"})

_Opened = TypeVar("_Opened", UpstreamConnection, UpstreamTunnel)


class UpstreamClient:
    """Keep-alive connection pools to upstream origins, shared by every route."""

    def __init__(
        self, *, keepalive_timeout: float = 30.0, sweep_interval: float = _SWEEP_INTERVAL
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.keepalive_timeout = keepalive_timeout
        self.sweep_interval = sweep_interval
        self._idle: dict[str, list[UpstreamConnection]] = {}
        self._open: set[UpstreamConnection | UpstreamTunnel] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        timeouts: UpstreamTimeouts,
        *,
        has_host: bool,
        has_length: bool,
        may_resend: bool,
    ) -> UpstreamResponse:
        """Send a request to ``origin`` and return its answer once the head is in.

        ``has_host``/``has_length``: whether ``headers`` already hold Host and
        Content-Length. ``may_resend``: the request may be sent again on a new connection
        when a reused one turns out to have been closed by the endpoint meanwhile.
        """
        chunked = False
        framing: str | None = None
        if isinstance(body, bytes):
            if not has_length:
                framing = f"Content-Length: {len(body)}"
        elif body is not None:
            if not has_length:
                chunked = True
                framing = "Transfer-Encoding: chunked"
        elif not has_length and method in _METHODS_WITH_BODY:
            framing = "Content-Length: 0"
        head = request_head(
            method, target, headers, None if has_host else origin.host_header, framing
        )
        connection = self._take_idle(origin.key)
        if connection is None:
            connection = await self._connect(origin, timeouts.connect, self._new_connection)
        try:
            return await connection.exchange(head, body, chunked, method, timeouts)
        except Disconnected:
            if not (may_resend and connection.reused and connection.answered_nothing):
                raise
        # The endpoint closed the idle connection as we wrote to it: a race every
        # keep-alive client meets; a fresh connection settles it.
        connection = await self._connect(origin, timeouts.connect, self._new_connection)
        return await connection.exchange(head, body, chunked, method, timeouts)

    async def upgrade(
        self,
        origin: Origin,
        target: str,
        headers: Iterable[tuple[str, str]],
        timeouts: UpstreamTimeouts,
        *,
        has_host: bool,
    ) -> UpstreamTunnel:
        """Send an upgrade request (a GET without body) to ``origin`` on a new connection
        and return it once the answer head is in: a tunnel when ``status`` is 101,
        otherwise already closed."""
        head = request_head("GET", target, headers, None if has_host else origin.host_header, None)
        tunnel = await self._connect(origin, timeouts.connect, self._new_tunnel)
        await tunnel.handshake(head, timeouts)
        return tunnel

    # -- pool ----------------------------------------------------------------------------

    def _take_idle(self, key: str) -> UpstreamConnection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            transport = connection.transport
            if not connection.closed and transport is not None and not transport.is_closing():
                return connection
        return None

    def keep(self, connection: UpstreamConnection) -> None:
        if self._closed:
            connection.close()
            return
        connection.idle_since = self.loop.time()
        idle = self._idle.get(connection.origin.key)
        if idle is None:
            idle = self._idle[connection.origin.key] = []
        idle.append(connection)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.sweep_interval, self._sweep)

    def forget(self, connection: UpstreamConnection | UpstreamTunnel) -> None:
        self._open.discard(connection)

    def _sweep(self) -> None:
        self._sweeper = None
        expired = self.loop.time() - self.keepalive_timeout
        for key, idle in list(self._idle.items()):
            # Oldest first: connections are taken from and returned to the end.
            fresh = [c for c in idle if not c.closed and c.idle_since > expired]
            for connection in idle:
                if not connection.closed and connection.idle_since <= expired:
                    connection.close()
            if fresh:
                idle[:] = fresh
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = self.loop.call_later(self.sweep_interval, self._sweep)

    def _new_connection(self, origin: Origin) -> UpstreamConnection:
        return UpstreamConnection(self, origin)

    def _new_tunnel(self, origin: Origin) -> UpstreamTunnel:
        return UpstreamTunnel(self.loop, origin, self.forget)

    async def _connect(
        self, origin: Origin, limit: float | None, factory: Callable[[Origin], _Opened]
    ) -> _Opened:
        if self._closed:
            raise ConnectFailed("the router is shutting down", "the router is shutting down")
        tls: ssl.SSLContext | None = None
        if origin.tls:
            tls = self._ssl
            if tls is None:
                tls = self._ssl = ssl.create_default_context()
        try:
            async with asyncio.timeout(limit):
                _, connection = await self.loop.create_connection(
                    lambda: factory(origin),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls is not None else None,
                )
        except TimeoutError:
            raise ConnectFailed(
                f"connecting to {origin.host_header} took longer than {limit:g} s",
                "connecting took too long",
            ) from None
        except ssl.SSLError as exc:
            raise ConnectFailed(
                f"TLS with {origin.host_header} failed: {exc.reason or exc}",
                "the TLS handshake failed",
            ) from None
        except OSError as exc:
            raise ConnectFailed(
                f"cannot connect to {origin.host_header}: {exc.strerror or exc}",
                _os_error_summary(exc),
            ) from None
        self._open.add(connection)
        return connection

    async def close(self) -> None:
        """Close every connection; exchanges still running see their connection drop."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._idle.clear()
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        # Let the transports deliver connection_lost before the loop goes away.
        await asyncio.sleep(0)


def _os_error_summary(exc: OSError) -> str:
    """What a failed connect means, without an address (asyncio's own ``strerror`` is
    "Connect call failed ('10.1.0.11', 8080)"): the C library's text for its errno."""
    if isinstance(exc, socket.gaierror):
        return "the host name could not be resolved"
    if exc.errno and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return "no connection could be opened"
