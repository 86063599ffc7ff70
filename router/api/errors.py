"""Errors plugins raise to answer a request with a clear page instead of a traceback."""

from __future__ import annotations


class RouterHTTPError(Exception):
    """Answer the request with ``status`` and ``message`` (rendered as HTML or JSON)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close_connection = close_connection
        """Close the client connection after this answer (e.g. an unread body remains)."""
