"""What the upstream client puts on the wire and the errors it reports.

SECURITY: a header name or value carrying CR or LF (say, a claim a plugin copied into an
identity header) would let its author write their own headers or a second request; such a
request is refused before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterable


class UpstreamError(Exception):
    """Forwarding to an endpoint failed. ``str()`` says how, naming the endpoint (for the
    log, and error pages in dev mode); ``summary`` says what happened without any address
    (for error pages everywhere else)."""

    summary = "the exchange with it failed"

    def __init__(self, message: str, summary: str | None = None) -> None:
        super().__init__(message)
        if summary is not None:
            self.summary = summary


class ConnectFailed(UpstreamError):
    """No connection could be opened; nothing was sent."""

    summary = "no connection could be opened"


class Disconnected(UpstreamError):
    """The endpoint closed the connection before the response head was complete."""

    summary = "it closed the connection before answering"


class ProtocolViolation(UpstreamError):
    """The endpoint's answer is not valid HTTP/1.1."""

    summary = "its answer was not valid HTTP/1.1"


class BodyBroken(UpstreamError):
    """The response body broke off before its end."""

    summary = "its answer broke off before the end"


class RequestBodyFailed(UpstreamError):
    """Reading the client's request body failed; the cause is in ``__cause__``."""


class InvalidRequest(UpstreamError):
    """The request cannot be written as HTTP/1.1 (CR or LF in a header, say)."""


class UpstreamTimeouts:
    """Connect, idle read and total deadlines of one route, in seconds (None: no limit)."""

    __slots__ = ("connect", "read", "total")

    def __init__(self, connect: float | None, read: float | None, total: float | None) -> None:
        self.connect = connect
        self.read = read
        self.total = total


class Origin:
    """Where to connect for one upstream endpoint, and what to call it in ``Host``."""

    __slots__ = ("host", "host_header", "key", "port", "tls")

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        default_port = 443 if self.tls else 80
        bracketed = f"[{host}]" if ":" in host else host
        self.host_header = bracketed if port == default_port else f"{bracketed}:{port}"
        self.key = f"{scheme}://{bracketed}:{port}"


def request_head(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    host: str | None,
    framing: str | None,
) -> bytes:
    """The serialized request line and headers; ``framing`` is a Content-Length or
    Transfer-Encoding line to add, ``host`` a Host line to add."""
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines.extend(map(": ".join, headers))
    if framing is not None:
        lines.append(framing)
    lines.append("\r\n")
    head = "\r\n".join(lines)
    # One CR and one LF per line break we wrote: anything more came from a name or value.
    if head.count("\n") != len(lines) or head.count("\r") != len(lines):
        raise InvalidRequest("a request header contains a line break")
    if " " in target:
        raise InvalidRequest("the request target contains a space")
    return head.encode("utf-8", "surrogateescape")
