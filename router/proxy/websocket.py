"""WebSocket upgrades: which requests are ones, the checks on both handshakes, and the
relay of the two byte streams once the endpoint switched protocols.

The handshake goes upstream like any request (the forwarder's endpoint choice, connect
timeout, passive health, retries and upstream observers); see proxy/tunnel.py.

After the 101 the router relays raw bytes both ways instead of frames (as nginx does): the
client's handshake (key, subprotocols, extensions) is the one the endpoint answers, so
both ends agree on the framing without the router taking part. On the client side
aiohttp's server keeps the connection: the 101 is an ordinary prepared response (so
response hooks, e.g. signing, see it), the endpoint's bytes are written through it (with
its flow control), and the client's bytes come from the connection's payload parser slot,
the same place aiohttp's own WebSocket reader is plugged in.

SECURITY: the client's upgrade is accepted only after the endpoint answered 101 with
``Upgrade: websocket`` and the ``Sec-WebSocket-Accept`` that matches the client's key, so a
backend that refuses (or answers a plain response) never gets a tunnel, and what the
client sent after its upgrade request is read as HTTP again. The route's plugin chain
(auth) has run before the forwarder is reached.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, cast

from aiohttp import web
from multidict import CIMultiDictProxy

from router.api.errors import RouterHTTPError
from router.proxy.headers import connection_tokens
from router.proxy.tunnel import UpstreamTunnel

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_VERSIONS = frozenset({"13", "8", "7"})
"""Sec-WebSocket-Version values accepted from clients (aiohttp's own server's set)."""


def is_websocket_upgrade(headers: CIMultiDictProxy[str]) -> bool:
    """True for a request asking to switch to WebSocket (``Upgrade: websocket`` and
    ``Connection: upgrade``): the one test the router uses for it."""
    upgrade = headers.get("Upgrade")
    if upgrade is None or upgrade.strip().lower() != "websocket":
        return False
    connection = headers.get("Connection")
    return connection is not None and "upgrade" in connection_tokens(connection)


def expected_accept(request: web.BaseRequest) -> str:
    """Check the client's handshake and return the ``Sec-WebSocket-Accept`` its key calls
    for; a malformed handshake is refused before any upstream connection."""
    if request.method != "GET":
        raise RouterHTTPError(400, "A WebSocket upgrade must use GET.")
    if request.body_exists:
        # What follows the body would be read as the new protocol: do not go on.
        raise RouterHTTPError(
            400, "A WebSocket upgrade cannot have a body.", close_connection=True
        )
    headers = request.headers
    if headers.get("Sec-WebSocket-Version", "") not in _VERSIONS:
        raise RouterHTTPError(400, "The WebSocket version is missing or not supported.")
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise RouterHTTPError(400, "The WebSocket key is missing or malformed.")
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # noqa: S324


def switched(tunnel: UpstreamTunnel, accept: str) -> bool:
    """True when the endpoint's answer completes the client's WebSocket handshake."""
    if tunnel.status != 101 or not tunnel.switched:
        return False
    upgrade = answer_accept = None
    for name, value in tunnel.headers:
        lowered = name.lower()
        if lowered == "upgrade":
            upgrade = value.strip().lower()
        elif lowered == "sec-websocket-accept":
            answer_accept = value.strip()
    return upgrade == "websocket" and answer_accept == accept


class _ToUpstream:
    """Takes the client's bytes from aiohttp's connection, in place of its WebSocket reader."""

    __slots__ = ("_tunnel",)

    def __init__(self, tunnel: UpstreamTunnel) -> None:
        self._tunnel = tunnel

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._tunnel.write(data)
        return False, b""

    def feed_eof(self) -> None:
        self._tunnel.close()


async def relay(
    request: web.BaseRequest, response: web.StreamResponse, tunnel: UpstreamTunnel
) -> None:
    """Relay bytes both ways until the endpoint ends the tunnel or the client goes away
    (then aiohttp cancels the handler, and the caller closes the tunnel)."""
    transport = request.transport
    if transport is None:
        return
    # The client is read only as fast as the endpoint takes its bytes.
    tunnel.on_pause_writing = transport.pause_reading
    tunnel.on_resume_writing = transport.resume_reading
    protocol = request.protocol
    protocol.keep_alive(False)
    # aiohttp types the slot as its own WebSocket reader; it calls only feed_data/feed_eof.
    protocol.set_parser(cast(Any, _ToUpstream(tunnel)))
    try:
        while data := await tunnel.read():
            await response.write(data)
    except ConnectionError:
        return  # the client's connection broke: nothing left to relay to
