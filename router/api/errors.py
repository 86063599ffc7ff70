"""Errors plugins raise to answer a request with a clear page instead of a traceback."""

from __future__ import annotations

from collections.abc import Sequence


class PluginConfigError(Exception):
    """A plugin's settings cannot be used: the one way a plugin reports it (from
    ``__init__`` or ``start``). The router names the file and line of ``where``, the key
    path inside the plugin's own ``config`` block (``()`` for the block itself), exactly as
    it does for its own configuration errors, and refuses to start (or to reload)."""

    def __init__(self, message: str, where: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.where = where


class RouterHTTPError(Exception):
    """Answer the request with ``status`` and ``message`` (rendered as HTML or JSON)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        close_connection: bool = False,
        links: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close_connection = close_connection
        """Close the client connection after this answer (e.g. an unread body remains)."""
        self.links = tuple(links)
        """``(label, same-site URL)`` pairs: the next steps offered on the page (e.g. "Sign
        in again"). Fixed by the plugin, never taken from the request."""
