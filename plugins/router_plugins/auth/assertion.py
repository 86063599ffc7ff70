"""A short-lived signed identity assertion for backends (ES256 or EdDSA JWT).

Backends verify it with the keys served at ``/.well-known/commons-router/jwks.json``, so
they need not trust the network between them and the router.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from router_plugins.auth.identity import Identity
from router_plugins.auth.settings import AssertionConfig

logger = logging.getLogger("commons_router.auth")

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _load(pem: str, algorithm: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if algorithm == "ES256":
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("ES256 needs a P-256 EC private key")
        return key
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("EdDSA needs an Ed25519 private key")
    return key


def _public_jwk(key: PrivateKey, algorithm: str) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(public))
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    else:
        jwk = json.loads(OKPAlgorithm.to_jwk(public))
        members = {k: jwk[k] for k in ("crv", "kty", "x")}
    # RFC 7638 thumbprint as the key id.
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**members, "kid": kid, "use": "sig", "alg": algorithm}


class AssertionSigner:
    def __init__(self, config: AssertionConfig) -> None:
        self.config = config
        algorithm = config.algorithm
        keys: list[PrivateKey] = [
            _load(k.get_secret_value(), algorithm) for k in config.private_keys
        ]
        if not keys:
            logger.warning(
                "identity assertions are signed with a key made at start: give "
                "assertion.private_keys when several replicas serve the same backends"
            )
            keys = [
                ec.generate_private_key(ec.SECP256R1())
                if algorithm == "ES256"
                else ed25519.Ed25519PrivateKey.generate()
            ]
        self._key = keys[0]
        self.jwks = {"keys": [_public_jwk(k, algorithm) for k in keys]}
        self._kid = self.jwks["keys"][0]["kid"]
        self._cache: dict[tuple[str, str, str], tuple[str, float]] = {}

    def sign(self, identity: Identity, audience: str) -> str:
        """An assertion for ``identity`` addressed to the route ``audience``.

        Reused for a while (at most a quarter of its lifetime) per user and route.
        """
        cache_key = (identity.issuer, identity.subject, audience)
        now = time.time()
        cached = self._cache.get(cache_key)
        if cached is not None and cached[1] > now:
            return cached[0]
        claims: dict[str, Any] = {
            "iss": self.config.issuer,
            "aud": audience,
            "sub": identity.subject,
            "iat": int(now),
            "exp": int(now + self.config.ttl),
            "auth_source": identity.source,
            "idp": identity.issuer,
        }
        if identity.email:
            claims["email"] = identity.email
            claims["email_verified"] = identity.email_verified
        if identity.name:
            claims["name"] = identity.name
        if identity.groups:
            claims["groups"] = list(identity.groups)
        token = jwt.encode(
            claims, self._key, algorithm=self.config.algorithm, headers={"kid": self._kid}
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[cache_key] = (token, now + self.config.ttl / 4)
        return token
