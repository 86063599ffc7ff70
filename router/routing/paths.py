"""Request-target normalization.

SECURITY: routing (and so every auth decision) uses the same normalized path that is
forwarded, so a backend can never be reached through a spelling the router did not judge:
dot segments are removed (also ``..;x``, which Tomcat treats as ``..``), repeated slashes
are merged, percent-encoded unreserved characters are decoded, and encoded ``/``, ``\\``,
NUL and the other control characters are rejected. Matrix parameters (``/admin;x``) are
ignored for matching only, and the segments they leave empty are merged like repeated
slashes (``/;/admin`` is ``//admin`` to Tomcat and Spring, so it must be matched as
``/admin``).

Encoded ``;``, ``#`` and ``?`` (``%3B``, ``%23``, ``%3F``) and double encodings (``%25``
followed by two hex digits) are kept as sent, flagged in ``encoded``; ``decoded_match_path``
is the path a backend that decodes them (once more) would route, for the route table to
judge by each route's ``path_match`` options.
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
# SECURITY: uvicorn decodes "%0A" into the path and Python's "$" also matches before a final
# newline, so Starlette's "^/admin$" takes "/admin%0A"; refuse every encoded control.
_CONTROLS = frozenset(f"{code:02X}" for code in (*range(0x20), 0x7F))
_DOUBLE_ENCODED = re.compile(r"%25(?=[0-9A-Fa-f]{2})")
_DECODED_DELIMITER = {"%3B": ";", "%23": "#", "%3F": "?"}
_DELIMITER_RE = re.compile(r"%(?:3B|23|3F)")

ENCODED_DELIMITER = 1
"""``encoded`` flag: the path holds ``%3B``, ``%23`` or ``%3F``."""
DOUBLE_ENCODED = 2
"""``encoded`` flag: the path holds ``%25`` followed by two hex digits."""


class PathError(ValueError):
    """The request target cannot be routed; the message says why (sent to the client)."""


class NormalizedTarget(NamedTuple):
    path: str
    """The path to forward (normalized)."""
    match_path: str
    """The path used for route matching: ``path`` without ``;parameters``."""
    query: str
    """The raw query string, without ``?`` (matched only by routes with query conditions)."""
    encoded: int = 0
    """``ENCODED_DELIMITER`` | ``DOUBLE_ENCODED``: the risky encodings the path holds."""
    decoded_match_path: str | None = None
    """With ``encoded``: the match path once they are decoded, as a backend that decodes
    them reads it; None when that reading would need normalizing again (an encoded dot
    segment, slash or control), which is never a legitimate spelling."""


def split_target(target: str) -> tuple[str, str]:
    """Split an origin-form request target into (path, query); drop any fragment."""
    hash_at = target.find("#")
    if hash_at >= 0:
        target = target[:hash_at]
    path, _, query = target.partition("?")
    return path, query


def normalize_target(
    target: str,
    *,
    merge_slashes: bool,
    reject_encoded_slash: bool,
    reject_encoded_controls: bool = True,
) -> NormalizedTarget:
    path, query = split_target(target)
    if not path.startswith("/"):
        raise PathError("the request target must be a path starting with '/'")
    if _NEEDS_WORK.search(path) is None:
        return NormalizedTarget(path, path, query)
    path = _normalize_path(path, merge_slashes, reject_encoded_slash, reject_encoded_controls)
    match_path = _without_parameters(path, merge_slashes)
    encoded = 0
    if "%" in path:
        if _DELIMITER_RE.search(path) is not None:
            encoded |= ENCODED_DELIMITER
        if _DOUBLE_ENCODED.search(path) is not None:
            encoded |= DOUBLE_ENCODED
    if not encoded:
        return NormalizedTarget(path, match_path, query)
    decoded = _decoded_match_path(path, merge_slashes)
    return NormalizedTarget(path, match_path, query, encoded, decoded)


def _normalize_path(
    path: str, merge_slashes: bool, reject_encoded_slash: bool, reject_encoded_controls: bool
) -> str:
    bad = _BAD_CHARS.search(path)
    if bad is not None:
        what = "a backslash" if bad.group() == "\\" else "a control, space or non-ASCII character"
        raise PathError(f"the path contains {what}; percent-encode it")
    if "%" in path:
        path = _PERCENT.sub(
            lambda m: _decode_percent(m, reject_encoded_slash, reject_encoded_controls), path
        )
    if merge_slashes and "//" in path:
        path = _MULTI_SLASH.sub("/", path)
    return remove_dot_segments(path)


def _without_parameters(path: str, merge_slashes: bool) -> str:
    if ";" not in path:
        return path
    match_path = "/".join(segment.partition(";")[0] for segment in path.split("/"))
    if merge_slashes and "//" in match_path:
        # SECURITY: "/;/admin" -> "//admin", which a backend that drops parameters
        # (Tomcat, Spring) serves as "/admin": match it as "/admin" too.
        match_path = _MULTI_SLASH.sub("/", match_path)
    return match_path


def _decoded_match_path(path: str, merge_slashes: bool) -> str | None:
    """The match path of ``path`` (normalized) read by a backend that decodes ``%25XX``
    once more and ``%3B``/``%23``/``%3F`` into the path, then strips ``;parameters`` or
    re-parses ``#``/``?`` (Spring, Tomcat, nginx ``$uri`` rewrites)."""
    if "%25" in path:
        once = _DOUBLE_ENCODED.sub("%", path)
        try:
            again = _normalize_path(once, merge_slashes, True, True)
        except PathError:
            return None
        if again != _PERCENT.sub(_upper_percent, once):
            return None  # an encoded dot segment or "//" in disguise
        path = again
    decoded = _DELIMITER_RE.sub(lambda m: _DECODED_DELIMITER[m.group()], path)
    cut = len(decoded)
    for delimiter in "#?":
        found = decoded.find(delimiter)
        if 0 <= found < cut:
            cut = found
    decoded = remove_dot_segments(decoded[:cut] or "/")
    return _without_parameters(decoded, merge_slashes)


def _upper_percent(match: re.Match[str]) -> str:
    digits = match.group(1) or ""
    char = chr(int(digits, 16)) if len(digits) == 2 and set(digits) <= _HEX else ""
    return char if char and char in _UNRESERVED else "%" + digits.upper()


def _decode_percent(
    match: re.Match[str], reject_encoded_slash: bool, reject_encoded_controls: bool
) -> str:
    digits = match.group(1)
    if digits is None or not (digits[0] in _HEX and digits[1] in _HEX):
        raise PathError("the path contains an invalid percent-encoding")
    upper = digits.upper()
    if reject_encoded_slash and upper in _FORBIDDEN_ENCODED:
        raise PathError(f"the path contains {_FORBIDDEN_ENCODED[upper]}, which is not allowed")
    if reject_encoded_controls and upper in _CONTROLS:
        raise PathError("the path contains an encoded control character, which is not allowed")
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
