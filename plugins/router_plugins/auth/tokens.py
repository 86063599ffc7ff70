"""JWT verification with pinned algorithms and per-issuer keys (pyjwt).

Used for bearer tokens, ID tokens and back-channel logout tokens alike.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from router_plugins.auth.jwks import JwksCache

# SECURITY: a token must not choose where its verification key comes from.
_KEY_HEADERS = ("jku", "x5u", "jwk", "x5c")
_KID = re.compile(r"^[A-Za-z0-9._~+=:-]{1,200}$")
_MAX_TOKEN = 16 * 1024


class TokenError(Exception):
    """The token is not acceptable; the message says why (safe to show the client)."""


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    issuer: str
    keys: JwksCache
    audience: tuple[str, ...]
    algorithms: tuple[str, ...]
    leeway: float


def unverified_issuer(token: str) -> str | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else None


class JwtVerifier:
    """Verifies tokens of the configured issuers; others are refused before any fetch."""

    def __init__(self, issuers: list[TrustedIssuer], *, cache_size: int = 10_000) -> None:
        self._issuers = {i.issuer: i for i in issuers}
        self._cache: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        self._cache_size = cache_size

    async def verify(
        self, token: str, *, require: tuple[str, ...] = ("exp", "sub")
    ) -> dict[str, Any]:
        cached = self._cache.get(token)
        if cached is not None:
            if cached[1] > time.time():
                self._cache.move_to_end(token)
                return cached[0]
            del self._cache[token]
        claims = await self.verify_uncached(token, require=require)
        exp = claims.get("exp")
        if self._cache_size and isinstance(exp, int | float):
            self._cache[token] = (claims, float(exp))
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return claims

    async def verify_uncached(
        self, token: str, *, require: tuple[str, ...] = ("exp", "sub")
    ) -> dict[str, Any]:
        if len(token) > _MAX_TOKEN or token.count(".") != 2:
            raise TokenError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenError("malformed token") from None
        if any(name in header for name in _KEY_HEADERS):
            raise TokenError("token names its own key (jku/x5u/jwk/x5c): refused")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise TokenError("unsigned token")
        issuer_name = unverified_issuer(token)
        issuer = self._issuers.get(issuer_name) if issuer_name is not None else None
        if issuer is None:
            raise TokenError("token from an unknown issuer")
        if alg not in issuer.algorithms:
            raise TokenError(f"algorithm {alg} is not accepted for this issuer")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not _KID.match(kid) or ".." in kid):
            raise TokenError("malformed key id")
        key = await issuer.keys.key(kid)
        if key is None:
            raise TokenError("token signed with an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=list(issuer.audience),
                issuer=issuer.issuer,
                leeway=issuer.leeway,
                options={"require": ["iss", "aud", *require]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise TokenError("token is for another audience") from None
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            raise TokenError(f"invalid token ({exc.__class__.__name__})") from None
        return claims
