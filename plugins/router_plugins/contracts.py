"""Services the built-in plugins share, so none depends on another being listed first.

A plugin that provides one calls ``services.provide(KEY, value)`` in ``start``; users look
it up lazily (``services.lookup(KEY)``) once every plugin has started, e.g. when building
their global middleware.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from aiohttp import web

from router.api import ServiceKey


class TraceResponse(ABC):
    """The trace a request belongs to, as the ``traceresponse`` header value."""

    @abstractmethod
    def traceresponse(self, request: web.BaseRequest) -> str | None:
        """``00-<trace id>-<span id>-<flags>`` of the request's server span, if any."""


TRACE_RESPONSE: ServiceKey[TraceResponse] = ServiceKey(
    "tracing.traceresponse",
    TraceResponse,  # type: ignore[type-abstract]
)
"""Provided by ``tracing``; ``provenance`` signs the value (and sets the header itself, so
the two plugins may be listed in any order)."""
