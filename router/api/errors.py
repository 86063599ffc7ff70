"""Errors plugins raise to answer a request with a clear page instead of a traceback."""

from __future__ import annotations


class RouterHTTPError(Exception):
    """Answer the request with ``status`` and ``message`` (rendered as HTML or JSON)."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
