"""Where a browser may be sent after login or logout.

Only same-origin relative paths or absolute URLs on this host or a configured host (same
scheme family, exact port). Everything else, however it is spelled, becomes ``/``.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_port(authority_host: str, port: int | None, scheme: str) -> str:
    return f"{authority_host}:{port if port is not None else _DEFAULT_PORTS[scheme]}"


def _normal_allowed(entry: str, scheme: str) -> str:
    host, sep, port = entry.lower().rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        return f"{host}:{port}"
    return f"{entry.lower()}:{_DEFAULT_PORTS[scheme]}"


def safe_return_url(
    target: str | None, *, scheme: str, host: str, allowed_hosts: list[str] | tuple[str, ...] = ()
) -> str | None:
    """``target`` when it is safe to redirect to, else None."""
    if not target or len(target) > 4096:
        return None
    # SECURITY: browsers drop tabs/newlines and read "\" as "/", so "/\t/evil" and "/\evil"
    # would leave the site; the same spelled with percent-encoding is refused as well.
    decoded = unquote(unquote(target))
    if any(ord(c) < 0x21 or c == "\\" or ord(c) == 0x7F for c in decoded):
        return None
    if target.startswith("/"):
        if decoded.startswith("//") or target.startswith("//"):
            return None
        return target
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or not parts.netloc:
        return None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return None
    if scheme == "https" and parts.scheme != "https":
        return None
    wanted = _host_port(parts.hostname.lower(), port, parts.scheme)
    current = _normal_allowed(host, scheme)
    allowed = {current, *(_normal_allowed(h, parts.scheme) for h in allowed_hosts)}
    return target if wanted in allowed else None
