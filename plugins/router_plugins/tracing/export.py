"""OTLP/HTTP span export whose failures free the batch at once.

The SDK's exporter kept every failed batch alive until a full garbage collection: the
error it keeps holds a traceback, whose frames link (``f_back``) up to the frames that
hold the batch, and the lower frames (the retry loops of requests and urllib3) hold the
error again, a reference cycle. The router collects the oldest generation rarely (see
``router/server.py``), so with a dead collector every batch failed and stayed: RSS grew
by about 1 MB a second at full sampling.

Here the batch is encoded to bytes on the batch thread (``encoding.py``, several times
cheaper than the SDK's encoder), and the bytes are posted from a separate sender thread:
nothing that a failed request leaves behind can reach the spans through its frames. The
sender also drops the failure's traceback frames, so the bytes are freed at once too. One
POST per batch on a kept-alive connection; no retry, except once on a kept-alive connection
the collector had closed (the batch processor moves on to the next batch; traces are
samples, and lost batches are counted in a warning).
"""

from __future__ import annotations

import http.client
import logging
import os
import ssl
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.util.re import parse_env_headers

from router_plugins.tracing.encoding import SpanEncoder

logger = logging.getLogger("commons_router.plugin.tracing")

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
# One warning per this many seconds while the collector keeps failing.
_WARN_EVERY = 30.0
# How a kept-alive connection the collector closed in the meantime fails (not a timeout:
# a collector that does not answer is not asked twice).
_STALE = frozenset(
    {"RemoteDisconnected", "ConnectionResetError", "BrokenPipeError", "BadStatusLine"}
)


def resolve_endpoint(endpoint: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The configured URL, else ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as is, else
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces`` (the OTLP specification's rules)."""
    if endpoint:
        return endpoint
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    return DEFAULT_ENDPOINT


def resolve_headers(
    headers: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    raw = environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    return {**parse_env_headers(raw, liberal=True), **headers}


def forget_traceback(error: BaseException) -> None:
    """Clear the frames of ``error`` and of the errors it chains, and drop the tracebacks:
    frames that hold their own error form cycles only a full collection would free."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
            current.__traceback__ = None
        pending.append(current.__cause__)
        pending.append(current.__context__)


class _Sender:
    """Posts bodies on its own thread, over one kept-alive connection."""

    def __init__(self, endpoint: str, headers: Mapping[str, str], timeout: float) -> None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint!r}")
        netloc = url.hostname if url.port is None else f"{url.hostname}:{url.port}"
        self.endpoint = f"{url.scheme}://{netloc}{url.path}"  # for logs: no user info
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self._target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._headers = {
            **headers,
            "Content-Type": "application/x-protobuf",
            "User-Agent": "commons-router",
        }
        self.timeout = timeout
        self._tls: ssl.SSLContext | None = None
        if self._https:
            cafile = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE") or os.environ.get(
                "OTEL_EXPORTER_OTLP_CERTIFICATE"
            )
            self._tls = ssl.create_default_context(cafile=cafile or None)
        self._connection: http.client.HTTPConnection | None = None
        self._work: list[tuple[bytes, Future[str | None]]] = []
        self._wake = threading.Condition()
        self._closed = False
        self._last_warning = 0.0
        self._thread = threading.Thread(
            target=self._run, name="commons-router-otlp-sender", daemon=True
        )
        self._thread.start()

    def send(self, body: bytes) -> str | None:
        """Post ``body``; None when the collector took it, else what went wrong."""
        outcome: Future[str | None] = Future()
        with self._wake:
            if self._closed:
                return "exporter stopped"
            self._work.append((body, outcome))
            self._wake.notify()
        try:
            # The connection's own timeout ends the POST first; this is a backstop.
            return outcome.result(self.timeout * 2 + 1)
        except FutureTimeout:
            return "timeout"

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(self.timeout + 1)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._work and not self._closed:
                    self._wake.wait()
                if not self._work:
                    break
                body, outcome = self._work.pop(0)
            outcome.set_result(self._post_once_more_if_stale(body))
            del body, outcome
        self._disconnect()

    def _post_once_more_if_stale(self, body: bytes) -> str | None:
        reused = self._connection is not None
        problem = self._post(body)
        if reused and problem in _STALE:
            # A kept-alive connection the collector closed while idle: one fresh try.
            problem = self._post(body)
        return problem

    def _post(self, body: bytes) -> str | None:
        try:
            connection = self._connection
            if connection is None:
                connection = self._connection = self._connect()
            connection.request("POST", self._target, body=body, headers=self._headers)
            response = connection.getresponse()
            response.read()
            if response.will_close:
                self._disconnect()
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as error:
            self._disconnect()
            problem = type(error).__name__
            forget_traceback(error)
            return problem

    def _connect(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._tls
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def should_warn(self) -> bool:
        now = time.monotonic()
        if now - self._last_warning < _WARN_EVERY:
            return False
        self._last_warning = now
        return True


class OtlpHttpSpanExporter(SpanExporter):
    """OTLP/HTTP (protobuf) span exporter; see the module docstring."""

    def __init__(self, endpoint: str | None, headers: Mapping[str, str], timeout: float) -> None:
        self._sender = _Sender(resolve_endpoint(endpoint), resolve_headers(headers), timeout)
        self._encoder = SpanEncoder()
        self.failed_batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = self._encoder.encode(spans)
        problem = self._sender.send(body)
        if problem is None:
            return SpanExportResult.SUCCESS
        self.failed_batches += 1
        if self._sender.should_warn():
            logger.warning(
                "tracing: exporting %d spans to %s failed (%s); failed batches so far: %d",
                len(spans),
                self._sender.endpoint,
                problem,
                self.failed_batches,
            )
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._sender.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
