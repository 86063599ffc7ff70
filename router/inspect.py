"""``commons-router inspect URL``: fetch a page and show, and check, which code served it.

Fetches the URL (optionally with a cookie or bearer token), reads the provenance header
(an RFC 8941 dictionary), the request id and the ``traceresponse`` trace id, and verifies
the router's RFC 9421 signature with the independent ``http-message-signatures`` library
against the router's published keys (or keys given with ``--keys``). Only a verified
signature makes the exit status 0.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import http_sf
from aiohttp import ClientError, ClientSession, ClientTimeout
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import HTTPMessageVerifier, InvalidSignature, MappingKeyResolver
from http_message_signatures import algorithms as signature_algorithms
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from yarl import URL

from router.api import SignedStatementProfile

MAX_KEYS_SIZE = 64 * 1024
MAX_AGE = datetime.timedelta(minutes=5)


Result = Literal["valid", "invalid", "missing", "key unknown"]


class InspectError(Exception):
    """The page or the keys could not be fetched or read."""


@cache
def signed_statement() -> SignedStatementProfile:
    """The installed plugin's description of what it signs (the provenance plugin's)."""
    from router.registry import discover_plugins

    profiles = [
        cls.signed_statement
        for _, cls in sorted(discover_plugins().items())
        if cls.signed_statement is not None
    ]
    if not profiles:
        raise InspectError("no installed plugin signs responses (is commons-router complete?)")
    return profiles[0]


@dataclass
class Verification:
    result: Result
    reason: str
    keyid: str | None = None
    created: int | None = None
    covered: list[str] = field(default_factory=list)
    keys_url: str | None = None


@dataclass
class Inspection:
    url: str
    status: int
    request_id: str | None
    trace_id: str | None
    traceresponse: str | None
    provenance: dict[str, Any] | None
    provenance_header: str | None
    provenance_problem: str | None
    signature: Verification

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- what the library needs to see a response and its request ---------------------------


class _Fields:
    """Read-only field lines for the verifier (it needs ``items``, iteration, ``in``)."""

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self._lines = list(lines)

    def items(self) -> list[tuple[str, str]]:
        return self._lines

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._lines)


@dataclass
class _Request:
    method: str
    url: str
    headers: _Fields


@dataclass
class _Response:
    status_code: int
    headers: _Fields
    request: _Request


class _Verifier(HTTPMessageVerifier):
    # The inspector's clock and the router's may differ a little.
    max_clock_skew = datetime.timedelta(seconds=60)


def jwks_keys(document: object) -> dict[str, Ed25519PublicKey]:
    """Ed25519 keys of a JWKS by ``kid``; other key types are ignored."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise InspectError('the key set is not a JWKS (a JSON object with "keys")')
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        kid, x = jwk.get("kid"), jwk.get("x")
        if not isinstance(kid, str) or not isinstance(x, str):
            continue
        try:
            raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            continue
    return keys


def _signature_entries(lines: list[tuple[str, str]], tag: str) -> dict[str, Any]:
    joined = ", ".join(v for n, v in lines if n.lower() == "signature-input")
    parsed = http_sf.parse(joined.encode("latin-1"), tltype="dictionary")
    if not isinstance(parsed, dict):
        raise ValueError("not a dictionary")
    return {
        label: member
        for label, member in parsed.items()
        if isinstance(member, tuple) and member[1].get("tag") == tag
    }


def verify(
    method: str,
    url: str,
    status: int,
    response_headers: Iterable[tuple[str, str]],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    header: str | None = None,
    tag: str | None = None,
    keys_url: str | None = None,
) -> Verification:
    """Check the router's signature on a response to ``method url``."""
    profile = signed_statement()
    header = header or profile.header
    tag = tag or profile.tag
    lines = list(response_headers)
    names = {name.lower() for name, _ in lines}
    if "signature-input" not in names or "signature" not in names:
        return Verification("missing", "the response has no Signature-Input/Signature headers")
    try:
        entries = _signature_entries(lines, tag)
    except Exception:
        return Verification("invalid", "the Signature-Input header is not a valid dictionary")
    if not entries:
        return Verification("missing", f"no signature with tag {tag!r} in the response")
    label, (_, params) = next(iter(entries.items()))
    keyid = params.get("keyid")
    created = params.get("created")
    result = Verification(
        "invalid",
        "",
        keyid=keyid if isinstance(keyid, str) else None,
        created=created if isinstance(created, int) else None,
        keys_url=keys_url,
    )
    if result.keyid is None:
        result.reason = "the signature names no key (keyid)"
        return result
    if result.keyid not in keys:
        result.result = "key unknown"
        where = f" at {keys_url}" if keys_url else ""
        result.reason = f"key {result.keyid!r} is not among the {len(keys)} published keys{where}"
        return result
    message = _Response(status, _Fields(lines), _Request(method.upper(), url, _Fields(())))
    verifier = _Verifier(
        signature_algorithm=signature_algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys=dict(keys), private_keys={}),
    )
    required = (header.lower(), *profile.required_components)
    try:
        verified = verifier.verify(
            message,
            expect_tag=tag,
            expect_label=label,
            require_components=required,
            max_age=MAX_AGE,
        )
    except (InvalidSignature, HTTPMessageSignaturesException) as exc:
        result.reason = str(exc) or type(exc).__name__
        return result
    result.covered = [c for c in verified[0].covered_components if c != '"@signature-params"']
    result.result = "valid"
    result.reason = f"signed by key {result.keyid} over {', '.join(result.covered)}"
    return result


def parse_provenance(value: str) -> dict[str, Any]:
    parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    if not isinstance(parsed, dict):
        raise ValueError("not a dictionary")
    out: dict[str, Any] = {}
    for key, member in parsed.items():
        item = member[0] if isinstance(member, tuple) else member
        out[key] = item if isinstance(item, str | bool | int | float) else str(item)
    return out


def trace_id_of(traceresponse: str | None) -> str | None:
    if not traceresponse:
        return None
    parts = traceresponse.strip().split("-")
    if len(parts) >= 4 and len(parts[1]) == 32:
        return parts[1]
    return None


async def _fetch_keys(session: ClientSession, keys: str) -> dict[str, Ed25519PublicKey]:
    if "://" not in keys:
        try:
            text = await asyncio.to_thread(Path(keys).read_bytes)
        except OSError as exc:
            raise InspectError(f"cannot read the key set {keys}: {exc.strerror or exc}") from None
    else:
        try:
            async with session.get(keys, allow_redirects=False) as response:
                if response.status != 200:
                    raise InspectError(f"the key set {keys} answered {response.status}")
                text = await response.content.read(MAX_KEYS_SIZE + 1)
        except (ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise InspectError(f"cannot fetch the key set {keys}: {reason}") from None
    if len(text) > MAX_KEYS_SIZE:
        raise InspectError(f"the key set {keys} is larger than {MAX_KEYS_SIZE} bytes")
    try:
        return jwks_keys(json.loads(text))
    except ValueError:
        raise InspectError(f"the key set {keys} is not JSON") from None


async def inspect(
    url: str,
    *,
    keys: str | None = None,
    cookie: str | None = None,
    bearer: str | None = None,
    header: str | None = None,
    tag: str | None = None,
    deadline: float = 30.0,
) -> Inspection:
    profile = signed_statement()
    header = header or profile.header
    tag = tag or profile.tag
    target = URL(url)
    if target.scheme not in ("http", "https") or not target.host:
        raise InspectError(f"not an http(s) URL: {url}")
    request_headers = {
        "Accept": "text/html,application/json;q=0.9,*/*;q=0.5",
        # RFC 9421 section 5.1: ask for the signature (routers may sign only when asked).
        "Accept-Signature": profile.accept_signature(),
    }
    if cookie:
        request_headers["Cookie"] = cookie
    if bearer:
        request_headers["Authorization"] = f"Bearer {bearer}"
    keys_url = keys or str(target.origin().with_path(profile.keys_path))
    async with ClientSession(
        timeout=ClientTimeout(total=deadline), auto_decompress=False
    ) as session:
        try:
            async with session.get(target, headers=request_headers, allow_redirects=False) as r:
                status = r.status
                lines = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in r.raw_headers]
                sent_url = str(r.request_info.url)
                await r.content.read(1)  # the headers are what is signed; no need for it all
        except (ClientError, TimeoutError) as exc:
            raise InspectError(f"cannot fetch {url}: {exc or type(exc).__name__}") from None
        headers = {name.lower(): value for name, value in lines}
        signature: Verification | None = None
        known: dict[str, Ed25519PublicKey] = {}
        if "signature-input" in headers:
            try:
                known = await _fetch_keys(session, keys_url)
            except InspectError as exc:
                signature = Verification("key unknown", str(exc), keys_url=keys_url)
    if signature is None:
        signature = verify(
            "GET", sent_url, status, lines, known, header=header, tag=tag, keys_url=keys_url
        )
    provenance_header = headers.get(header.lower())
    provenance: dict[str, Any] | None = None
    problem: str | None = None
    if provenance_header is None:
        problem = f"the response has no {header} header"
    else:
        try:
            provenance = parse_provenance(provenance_header)
        except Exception:
            problem = f"the {header} header is not an RFC 8941 dictionary"
    traceresponse = headers.get("traceresponse")
    return Inspection(
        url=url,
        status=status,
        request_id=headers.get("x-request-id"),
        trace_id=trace_id_of(traceresponse),
        traceresponse=traceresponse,
        provenance=provenance,
        provenance_header=provenance_header,
        provenance_problem=problem,
        signature=signature,
    )


_LABELS = {
    "repo": "repository",
    "commit": "commit",
    "dirty": "uncommitted changes",
    "version": "version",
    "image": "image",
    "image_digest": "image digest",
    "pod": "pod",
    "namespace": "namespace",
    "route": "route",
    "router": "version",
    "router-commit": "commit",
    "router-dirty": "uncommitted changes",
    "router-image-digest": "image digest",
}


def _is_router_field(key: str) -> bool:
    return key.startswith("router")


def _field_lines(fields: list[tuple[str, Any]], width: int) -> list[str]:
    lines = []
    for key, value in fields:
        shown = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        lines.append(f"    {_LABELS.get(key, key):<{width}}  {shown}")
    return lines


def render_text(inspection: Inspection) -> str:
    signature = inspection.signature
    verified = signature.result == "valid"
    lines = [f"{inspection.url}  ->  {inspection.status}"]
    if inspection.provenance is not None:
        lines.append("provenance" + ("" if verified else " (NOT verified)") + ":")
        items = list(inspection.provenance.items())
        width = max((len(_LABELS.get(k, k)) for k, _ in items), default=0)
        app = [(k, v) for k, v in items if not _is_router_field(k)]
        router = [(k, v) for k, v in items if _is_router_field(k)]
        lines.append("  application code:")
        lines.extend(_field_lines(app, width) or ["    (none published)"])
        lines.append("  router code (commons-router):")
        lines.extend(_field_lines(router, width) or ["    (none published)"])
    else:
        lines.append(f"provenance: none ({inspection.provenance_problem})")
    lines.append(f"request id: {inspection.request_id or '-'}")
    lines.append(f"trace id:   {inspection.trace_id or '-'}")
    lines.append(f"signature:  {signature.result.upper()} - {signature.reason}")
    if signature.keys_url:
        lines.append(f"keys:       {signature.keys_url}")
    return "\n".join(lines)


def run(
    url: str,
    *,
    as_json: bool,
    keys: str | None,
    cookie: str | None,
    bearer: str | None,
    header: str | None = None,
) -> int:
    """The ``inspect`` command; 0 only when a signature verified."""
    try:
        inspection = asyncio.run(
            inspect(url, keys=keys, cookie=cookie, bearer=bearer, header=header)
        )
    except InspectError as exc:
        if as_json:
            print(json.dumps({"url": url, "error": str(exc)}))
        print(f"commons-router inspect: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(inspection.to_json(), indent=2))
    else:
        print(render_text(inspection))
    return 0 if inspection.signature.result == "valid" else 1
