"""Hand-written HTTP/1.x over raw sockets, and a backend that records what it received.

The security tests send bytes that a well-behaved client library would refuse to produce
(two Content-Length headers, obs-fold, bare LF ...), so they talk to the router through
``asyncio.open_connection`` and parse the answers with the small parser below.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from router.testing import Backend, run_backend

CRLF = b"\r\n"
READ_LIMIT = 5.0
"""Longest wait for the router to answer or close; reached only when a test is failing."""


def request_bytes(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    host: str | None = "app.test",
    close: bool = True,
) -> bytes:
    """One request, byte for byte as given (no normalization of names or values)."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    if close:
        lines.append("Connection: close")
    head = "\r\n".join(lines).encode("latin-1") + CRLF + CRLF
    return head + body


@dataclass
class RawResponse:
    status: int
    reason: str
    version: str
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Exchange:
    data: bytes
    """Everything the router sent back."""
    closed: bool
    """True when the router closed the connection (EOF) before ``READ_LIMIT``."""
    responses: list[RawResponse] = field(default_factory=list)

    @property
    def statuses(self) -> list[int]:
        return [response.status for response in self.responses]

    @property
    def only(self) -> RawResponse:
        assert len(self.responses) == 1, f"expected one response, got {self.data!r}"
        return self.responses[0]


def parse_responses(data: bytes, *, head_request: bool = False) -> list[RawResponse]:
    """Split a byte stream into complete responses; a truncated last one is dropped."""
    responses: list[RawResponse] = []
    rest = data
    while rest:
        end = rest.find(CRLF + CRLF)
        if end < 0:
            break
        head, rest = rest[:end].decode("latin-1"), rest[end + 4 :]
        status_line, *header_lines = head.split("\r\n")
        version, _, status_reason = status_line.partition(" ")
        status_text, _, reason = status_reason.partition(" ")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
        status = int(status_text)
        body = b""
        if head_request or status in (204, 304) or 100 <= status < 200:
            pass
        elif headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                line_end = rest.find(CRLF)
                if line_end < 0:
                    return responses
                size = int(rest[:line_end].split(b";")[0], 16)
                chunk_start = line_end + 2
                if len(rest) < chunk_start + size + 2:
                    return responses
                chunks.append(rest[chunk_start : chunk_start + size])
                rest = rest[chunk_start + size + 2 :]
                if size == 0:
                    break
            body = b"".join(chunks)
        elif "Content-Length" in headers:
            length = int(headers["Content-Length"])
            if len(rest) < length:
                return responses
            body, rest = rest[:length], rest[length:]
        else:
            body, rest = rest, b""
        responses.append(RawResponse(status, reason, version, headers, body))
    return responses


async def _read_until_closed(reader: asyncio.StreamReader, received: bytearray) -> bool:
    """Append what arrives to ``received``; True once the router closed the connection."""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return True
            received += chunk
    except ConnectionError:
        # Reset or broken pipe: the router closed before reading all that was sent.
        return True


async def exchange(port: int, payload: bytes | Sequence[bytes], *, pause: float = 0.0) -> Exchange:
    """Send ``payload`` (in pieces, ``pause`` seconds apart) and read until the router
    closes the connection (or ``READ_LIMIT`` passes).

    Reading runs alongside writing, and writing stops as soon as the router answered or
    closed: a write to a closed socket makes the kernel drop an answer not yet read.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    reading = asyncio.create_task(_read_until_closed(reader, received))
    try:
        pieces = [payload] if isinstance(payload, bytes) else payload
        for index, piece in enumerate(pieces):
            if index and pause:
                await asyncio.sleep(pause)
            if reading.done():
                break
            writer.write(piece)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        done, _ = await asyncio.wait({reading}, timeout=READ_LIMIT)
        closed = bool(done) and reading.result()
        data = bytes(received)
        return Exchange(data, closed, parse_responses(data))
    finally:
        reading.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await writer.wait_closed()


@dataclass
class SeenRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool
    """False when the body broke off before its end."""

    def header_names(self) -> set[str]:
        """Names as the backend would look them up: lowercase, and ``_`` read as ``-``
        (what a WSGI/ASGI server does when it turns headers into variables)."""
        return {name.lower().replace("_", "-") for name, _ in self.headers}

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def value(self, name: str) -> str:
        found = self.values(name)
        assert len(found) == 1, f"{name}: {found!r} in {self.headers!r}"
        return found[0]


class RecordingBackend:
    """Records every request it gets, counting it as soon as its head arrives."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[SeenRequest] = []

    @property
    def targets(self) -> list[str]:
        return [seen.target for seen in self.requests]

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = bytearray()
        complete = False
        try:
            async for chunk in request.content.iter_any():
                body += chunk
            complete = True
        finally:
            self.requests.append(
                SeenRequest(
                    request.method,
                    request.raw_path,
                    f"HTTP/{request.version.major}.{request.version.minor}",
                    _raw_headers_str(request),
                    bytes(body),
                    complete,
                )
            )
        return web.json_response(
            {"backend": self.name, "target": request.raw_path, "body_length": len(body)},
            headers={"X-Backend": self.name},
        )


def _raw_headers_str(request: web.BaseRequest) -> list[tuple[str, str]]:
    return [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.raw_headers
    ]


@contextlib.asynccontextmanager
async def recording_backend(name: str) -> AsyncIterator[tuple[RecordingBackend, Backend]]:
    recorder = RecordingBackend(name)
    async with run_backend(web.Server(recorder.handle)) as running:
        yield recorder, running
