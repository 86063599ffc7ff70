"""RFC 9421 message components of a response the router signs, and signature headers an
upstream already set."""

from __future__ import annotations

from urllib.parse import quote

import http_sf
from aiohttp import web
from multidict import CIMultiDict

_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def request_authority(request: web.BaseRequest, scheme: str) -> str:
    """RFC 9421 ``@authority``: the Host the client used, lowercase, no default port."""
    host = request.headers.get("Host", "").strip().lower()
    host = host.removesuffix(_DEFAULT_PORTS.get(scheme, "\0"))
    return host if host.isascii() and host.isprintable() else quote(host, safe=":[]")


def request_path(request: web.BaseRequest, fallback: str) -> str:
    """RFC 9421 ``@path``: the path the client sent (not the normalized one we route on)."""
    raw = request.raw_path
    if not raw.startswith("/"):
        return fallback or "/"
    path = raw.partition("?")[0].partition("#")[0]
    if not (path.isascii() and path.isprintable()):
        path = quote(path, safe=_PATH_SAFE)
    return path or "/"


def without_label(value: str, label: str) -> str:
    """A Signature(-Input) dictionary minus our label ('' when malformed or empty).

    SECURITY: an upstream must not be able to present its own signature under our label.
    """
    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    except Exception:
        return ""
    if not isinstance(parsed, dict):
        return ""
    parsed.pop(label, None)
    return http_sf.ser(parsed) if parsed else ""


def merge_signatures(
    headers: CIMultiDict[str], label: str, signature_input: str, signature: str
) -> None:
    """Keep an upstream's own signatures (other labels) next to ours."""
    for name, ours in (("Signature-Input", signature_input), ("Signature", signature)):
        foreign = without_label(", ".join(headers.getall(name, ())), label)
        headers[name] = f"{foreign}, {ours}" if foreign else ours


def strip_label(headers: CIMultiDict[str], label: str) -> None:
    """Remove an upstream's signature under our label, keeping its others (unsigned
    responses must not carry a signature that looks like ours either)."""
    for name in ("Signature-Input", "Signature"):
        if name in headers:
            foreign = without_label(", ".join(headers.getall(name)), label)
            if foreign:
                headers[name] = foreign
            else:
                del headers[name]
