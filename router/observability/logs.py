"""The router's own log (not the access log): level, text or JSON lines, and a limit on
repeated warnings.

JSON lines follow the OpenTelemetry log data model: ``timestamp``, ``severity_text``,
``severity_number``, ``body``, ``attributes`` (the logger's name as ``logger.name``,
exceptions as ``exception.*``, the ``request_id`` of the request being handled), and
``trace_id`` / ``span_id`` when a span is active (the request's ``trace_id`` otherwise).
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from router.api.context import RequestContext

CURRENT_REQUEST: ContextVar[RequestContext | None] = ContextVar(
    "commons_router_current_request", default=None
)
"""The request being handled by this task (aiohttp runs each request in its own task), so
log lines written while handling it carry its request id and trace id."""

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# OpenTelemetry SeverityNumber: the first number of each range.
_SEVERITY_NUMBERS = {
    logging.DEBUG: 5,
    logging.INFO: 9,
    logging.WARNING: 13,
    logging.ERROR: 17,
    logging.CRITICAL: 21,
}

REPEAT_WINDOW = 10.0
REPEAT_BURST = 5
"""Identical warnings beyond this many within the window are counted, not written."""


def _severity_number(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _SEVERITY_NUMBERS[level]
    return _SEVERITY_NUMBERS[logging.DEBUG]


def _current_span_ids() -> tuple[str, str] | None:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry-api is a dependency
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, named after the OpenTelemetry log data model."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        nanos = int((record.created - seconds) * 1e9)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        attributes: dict[str, Any] = {"logger.name": record.name}
        repeated = getattr(record, "repeated", None)
        if repeated:
            attributes["log.repeated_count"] = repeated
        document: dict[str, Any] = {
            "timestamp": f"{stamp}.{nanos:09d}Z",
            "severity_text": record.levelname,
            "severity_number": _severity_number(record.levelno),
            "body": record.getMessage(),
            "attributes": attributes,
        }
        if record.exc_info and record.exc_info[0] is not None:
            kind, value, tb = record.exc_info
            attributes["exception.type"] = kind.__qualname__
            attributes["exception.message"] = str(value)
            stack = traceback.format_exception(kind, value, tb)
            attributes["exception.stacktrace"] = "".join(stack)
        ids = _current_span_ids()
        if ids is not None:
            document["trace_id"], document["span_id"] = ids
        request = CURRENT_REQUEST.get()
        if request is not None:
            attributes["request_id"] = request.request_id
            fields = request.log_fields
            if ids is None and fields and "trace_id" in fields:
                document["trace_id"] = fields["trace_id"]
        return orjson.dumps(document, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        repeated = getattr(record, "repeated", None)
        return f"{text} (and {repeated} more like it)" if repeated else text


class RepeatLimiter(logging.Filter):
    """Write the first :data:`REPEAT_BURST` of a run of identical warnings, count the rest
    until :data:`REPEAT_WINDOW` seconds after the first, then write the next one with the
    count of those left out.

    Identical means same logger, level and message template (``"session lookup failed:
    %s"``), whatever the arguments: a Redis outage must not write one line per request.
    """

    def __init__(
        self, window: float = REPEAT_WINDOW, burst: int = REPEAT_BURST, clock: Any = time.monotonic
    ) -> None:
        super().__init__()
        self.window = window
        self.burst = burst
        self._clock = clock
        self._runs: dict[tuple[str, int, str], list[float]] = {}
        """Template -> [window start, written, left out]."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        run = self._runs.get(key)
        if run is not None and now - run[0] < self.window:
            if run[1] < self.burst:
                run[1] += 1
                return True
            run[2] += 1
            return False
        if run is not None and run[2]:
            record.repeated = int(run[2])
        if len(self._runs) > 1000:
            # Bounded: messages with endless distinct templates must not grow this.
            self._runs.clear()
        self._runs[key] = [now, 1, 0]
        return True


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
