"""A token issuer for the tests: real RSA keys, a JWKS endpoint that counts its fetches."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class Issuer:
    def __init__(self, name: str = "https://issuer.test", kid: str = "key-1") -> None:
        self.name = name
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.extra_keys: list[tuple[str, rsa.RSAPrivateKey]] = []
        self.fetches: list[str] = []
        self.url = ""  # set once served

    @property
    def jwks_url(self) -> str:
        return self.url + "/jwks"

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in [(self.kid, self.key), *self.extra_keys]:
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.name,
            "aud": "api://router",
            "sub": "alice",
            "email": "alice@example.org",
            "groups": ["staff"],
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self,
        *,
        headers: dict[str, Any] | None = None,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        return jwt.encode(
            self.claims(**claims),
            key or self.key,
            algorithm="RS256",
            headers={"kid": kid or self.kid, **(headers or {})},
        )

    def app(self) -> web.Application:
        async def jwks(request: web.Request) -> web.Response:
            self.fetches.append(request.path)
            return web.json_response(self.jwks())

        async def anything(request: web.Request) -> web.Response:
            self.fetches.append(request.path)
            return web.json_response(self.jwks())

        app = web.Application()
        app.router.add_get("/jwks", jwks)
        app.router.add_route("*", "/{tail:.*}", anything)
        return app
