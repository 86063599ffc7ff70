"""Request-target normalization.

SECURITY: routing (and so every auth decision) uses the same normalized path that is
forwarded, so a backend can never be reached through a spelling the router did not judge:
dot segments are removed (also ``..;x``, which Tomcat treats as ``..``), repeated slashes
are merged, percent-encoded unreserved characters are decoded, and encoded ``/``, ``\\`` or
NUL are rejected. Matrix parameters (``/admin;x``) are ignored for matching only, and
the segments they leave empty are merged like repeated slashes (``/;/admin`` is ``//admin``
to Tomcat and Spring, so it must be matched as ``/admin``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

# SECURITY: every non-ASCII character (not only the BMP) takes the slow path and is refused.
_NEEDS_WORK = re.compile(r"[%\\;\x00-\x20\x7f-\U0010ffff]|//|/\.")
_BAD_CHARS = re.compile(r"[\\\x00-\x20\x7f-\U0010ffff]")
_PERCENT = re.compile(r"%(..)?")
_MULTI_SLASH = re.compile(r"/{2,}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
_FORBIDDEN_ENCODED = {"2F": "an encoded '/'", "5C": "an encoded '\\'", "00": "an encoded NUL"}


class PathError(ValueError):
    """The request target cannot be routed; the message says why (sent to the client)."""


class NormalizedTarget(NamedTuple):
    path: str
    """The path to forward (normalized)."""
    match_path: str
    """The path used for route matching: ``path`` without ``;parameters``."""
    query: str
    """The raw query string, without ``?`` (never used for matching)."""


def split_target(target: str) -> tuple[str, str]:
    """Split an origin-form request target into (path, query); drop any fragment."""
    hash_at = target.find("#")
    if hash_at >= 0:
        target = target[:hash_at]
    path, _, query = target.partition("?")
    return path, query


def normalize_target(
    target: str, *, merge_slashes: bool, reject_encoded_slash: bool
) -> NormalizedTarget:
    path, query = split_target(target)
    if not path.startswith("/"):
        raise PathError("the request target must be a path starting with '/'")
    if _NEEDS_WORK.search(path) is None:
        return NormalizedTarget(path, path, query)
    return _normalize_slow(path, query, merge_slashes, reject_encoded_slash)


def _normalize_slow(
    path: str, query: str, merge_slashes: bool, reject_encoded_slash: bool
) -> NormalizedTarget:
    bad = _BAD_CHARS.search(path)
    if bad is not None:
        what = "a backslash" if bad.group() == "\\" else "a control, space or non-ASCII character"
        raise PathError(f"the path contains {what}; percent-encode it")
    if "%" in path:
        path = _PERCENT.sub(lambda m: _decode_percent(m, reject_encoded_slash), path)
    if merge_slashes and "//" in path:
        path = _MULTI_SLASH.sub("/", path)
    path = remove_dot_segments(path)
    match_path = path
    if ";" in path:
        match_path = "/".join(segment.partition(";")[0] for segment in path.split("/"))
        if merge_slashes and "//" in match_path:
            # SECURITY: "/;/admin" -> "//admin", which a backend that drops parameters
            # (Tomcat, Spring) serves as "/admin": match it as "/admin" too.
            match_path = _MULTI_SLASH.sub("/", match_path)
    return NormalizedTarget(path, match_path, query)


def _decode_percent(match: re.Match[str], reject_encoded_slash: bool) -> str:
    digits = match.group(1)
    if digits is None or not (digits[0] in _HEX and digits[1] in _HEX):
        raise PathError("the path contains an invalid percent-encoding")
    upper = digits.upper()
    if reject_encoded_slash and upper in _FORBIDDEN_ENCODED:
        raise PathError(f"the path contains {_FORBIDDEN_ENCODED[upper]}, which is not allowed")
    char = chr(int(upper, 16))
    if char in _UNRESERVED:
        return char
    return "%" + upper


def _is_dot(segment: str, dots: str) -> bool:
    return segment.partition(";")[0] == dots


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path; ``..`` never climbs above the root."""
    segments = path.split("/")
    output: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments[1:], start=1):
        if _is_dot(segment, "."):
            if index == last:
                output.append("")
        elif _is_dot(segment, ".."):
            if output:
                output.pop()
            if index == last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)
