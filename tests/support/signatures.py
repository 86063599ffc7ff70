"""An independent RFC 9421 verifier for the tests: the ``http-message-signatures`` library
fed with exactly what a client sent and received, and keys from a JWKS."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms


class Fields:
    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self.lines = list(lines)

    def items(self) -> list[tuple[str, str]]:
        return self.lines

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self.lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self.lines)


@dataclass
class Request:
    method: str
    url: str
    headers: Fields


@dataclass
class Response:
    status_code: int
    headers: Fields
    request: Request


def new_key_pem() -> tuple[bytes, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, key


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def keys_from_jwks(jwks: dict[str, Any]) -> dict[str, Ed25519PublicKey]:
    keys = {}
    for jwk in jwks["keys"]:
        x = jwk["x"] + "=" * (-len(jwk["x"]) % 4)
        keys[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x))
    return keys


def verify_response(
    method: str,
    url: str,
    status: int,
    headers: Iterable[tuple[str, str]],
    keys: dict[str, Ed25519PublicKey],
    *,
    required: tuple[str, ...] = (
        "@status",
        "provenance",
        "x-request-id",
        '"@method";req',
        '"@authority";req',
        '"@path";req',
    ),
    body: bytes | None = None,
) -> list[Any]:
    """Raise InvalidSignature unless the response carries a valid router signature."""
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys=keys, private_keys={}),
    )
    message = Response(status, Fields(headers), Request(method, url, Fields(())))
    return verifier.verify(
        message,
        expect_tag="commons-router",
        expect_label="prov",
        require_components=required,
        max_age=datetime.timedelta(minutes=5),
        body=body,
    )
