"""The OpenID provider as the router sees it: discovery, code exchange, refresh, logout.

Protocol values (PKCE S256 challenge, state, nonce, authorization URL) come from authlib;
HTTP goes through the router's shared client session with a timeout on every call.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout
from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
    prepare_grant_uri,
)
from authlib.oauth2.rfc7636 import (  # type: ignore[import-untyped]
    create_s256_code_challenge,
)

from router_plugins.auth.jwks import JwksCache
from router_plugins.auth.settings import OidcConfig
from router_plugins.auth.tokens import JwtVerifier, TokenError, TrustedIssuer

_MAX_BODY = 1024 * 1024
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class IdpUnavailable(Exception):
    """The provider cannot be reached or answered nonsense."""


class IdpRejected(Exception):
    """The provider refused (e.g. an invalid or reused refresh token)."""


@dataclass(frozen=True, slots=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    iss_parameter: bool = False
    """RFC 9207: the provider adds ``iss`` to every authorization response."""


@dataclass(frozen=True, slots=True)
class LoginStart:
    url: str
    state: str
    verifier: str
    nonce: str


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str | None
    refresh_token: str | None
    id_token: str | None
    access_expires: float | None
    lifetime: float | None = None
    """``expires_in`` of the access token."""


class OidcClient:
    def __init__(self, config: OidcConfig, http: ClientSession, *, jwks_min_refetch: float) -> None:
        self.config = config
        self._http = http
        self._metadata: Metadata | None = None
        self._verifier: JwtVerifier | None = None
        self._lock = asyncio.Lock()
        self._jwks_min_refetch = jwks_min_refetch

    async def _json(
        self, method: str, url: str, extra_headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        headers.update(extra_headers or {})
        try:
            async with self._http.request(
                method,
                url,
                timeout=ClientTimeout(total=self.config.timeout),
                allow_redirects=False,
                headers=headers,
                **kwargs,
            ) as response:
                body = await response.content.read(_MAX_BODY + 1)
                status = response.status
        except (ClientError, TimeoutError, OSError) as exc:
            raise IdpUnavailable(f"{url}: {exc.__class__.__name__} {exc}".strip()) from None
        if len(body) > _MAX_BODY:
            raise IdpUnavailable(f"{url}: answer too large")
        try:
            return status, orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            if status >= 500:
                raise IdpUnavailable(f"{url} answered {status}") from None
            return status, None

    async def metadata(self) -> Metadata:
        if self._metadata is not None:
            return self._metadata
        async with self._lock:
            return self._metadata or await self._discover()

    async def _discover(self) -> Metadata:
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        status, data = await self._json("GET", url)
        if status != 200 or not isinstance(data, dict):
            raise IdpUnavailable(f"discovery at {url} answered {status}")
        try:
            metadata = Metadata(
                issuer=str(data["issuer"]),
                authorization_endpoint=str(data["authorization_endpoint"]),
                token_endpoint=str(data["token_endpoint"]),
                jwks_uri=str(data["jwks_uri"]),
                end_session_endpoint=data.get("end_session_endpoint"),
                iss_parameter=data.get("authorization_response_iss_parameter_supported") is True,
            )
        except KeyError as exc:
            raise IdpUnavailable(f"discovery document lacks {exc}") from None
        if metadata.issuer != self.config.issuer:
            # SECURITY: OIDC Discovery §4.3 — the document must be about this issuer.
            raise IdpUnavailable(
                f"discovery names issuer {metadata.issuer!r}, not {self.config.issuer!r}"
            )
        keys = JwksCache(
            metadata.jwks_uri,
            self._http,
            min_refetch=self._jwks_min_refetch,
            timeout=self.config.timeout,
        )
        self._verifier = JwtVerifier(
            [
                TrustedIssuer(
                    issuer=metadata.issuer,
                    keys=keys,
                    audience=(self.config.client_id,),
                    algorithms=tuple(self.config.algorithms),
                    leeway=self.config.leeway,
                )
            ],
            cache_size=0,
        )
        self._metadata = metadata
        return metadata

    async def start_login(self, redirect_uri: str) -> LoginStart:
        metadata = await self.metadata()
        state = generate_token(43)
        verifier = generate_token(64)
        nonce = generate_token(32)
        url = prepare_grant_uri(
            metadata.authorization_endpoint,
            self.config.client_id,
            "code",
            redirect_uri=redirect_uri,
            scope=" ".join(self.config.scopes),
            state=state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )
        return LoginStart(url=url, state=state, verifier=verifier, nonce=nonce)

    def _auth(self) -> dict[str, str]:
        """``client_secret_basic`` (RFC 6749 §2.3.1: each part form-encoded first)."""
        if self.config.client_secret is None:
            return {}
        pair = f"{quote_plus(self.config.client_id)}:"
        pair += quote_plus(self.config.client_secret.get_secret_value())
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    async def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        metadata = await self.metadata()
        if self.config.client_secret is None:
            form = {**form, "client_id": self.config.client_id}
        # The shared client session adds no headers by itself: set the content type.
        headers = {"Content-Type": "application/x-www-form-urlencoded", **self._auth()}
        status, data = await self._json(
            "POST", metadata.token_endpoint, data=urlencode(form), extra_headers=headers
        )
        if status >= 500:
            raise IdpUnavailable(f"token endpoint answered {status}")
        if status != 200 or not isinstance(data, dict):
            error = ""
            if isinstance(data, dict):
                error = f"{data.get('error', '')}: {data.get('error_description', '')}"
            raise IdpRejected(f"token endpoint answered {status} {error[:300]}".strip())
        return data

    @staticmethod
    def _token_set(data: dict[str, Any], previous_refresh: str | None = None) -> TokenSet:
        raw = data.get("expires_in")
        lifetime = (
            float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
        )
        return TokenSet(
            access_token=data.get("access_token"),
            refresh_token=data.get("refresh_token") or previous_refresh,
            id_token=data.get("id_token"),
            access_expires=time.time() + lifetime if lifetime is not None else None,
            lifetime=lifetime,
        )

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> TokenSet:
        data = await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            }
        )
        return self._token_set(data)

    async def refresh(self, refresh_token: str) -> TokenSet:
        data = await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )
        return self._token_set(data, refresh_token)

    async def verify_id_token(self, token: str, nonce: str | None) -> dict[str, Any]:
        await self.metadata()
        assert self._verifier is not None
        claims = await self._verifier.verify_uncached(token, require=("exp", "iat", "sub"))
        if nonce is not None and claims.get("nonce") != nonce:
            raise TokenError("ID token nonce does not match this login")
        audience = claims.get("aud")
        several = isinstance(audience, list) and len(audience) > 1
        if several and claims.get("azp") != self.config.client_id:
            raise TokenError("ID token for several audiences without this client as azp")
        return claims

    async def verify_logout_token(self, token: str) -> dict[str, Any]:
        await self.metadata()
        assert self._verifier is not None
        claims = await self._verifier.verify_uncached(token, require=("iat",))
        events = claims.get("events")
        if not isinstance(events, dict) or BACKCHANNEL_EVENT not in events:
            raise TokenError("not a back-channel logout token")
        if "nonce" in claims:
            raise TokenError("a logout token has no nonce")
        if not claims.get("sid") and not claims.get("sub"):
            raise TokenError("a logout token names a sid or a sub")
        return claims

    async def end_session_url(
        self, id_token: str | None, post_logout_redirect: str | None, state: str | None = None
    ) -> str | None:
        try:
            metadata = await self.metadata()
        except IdpUnavailable:
            return None
        if not metadata.end_session_endpoint:
            return None
        params = {"client_id": self.config.client_id}
        if id_token:
            params["id_token_hint"] = id_token
        if post_logout_redirect:
            params["post_logout_redirect_uri"] = post_logout_redirect
            if state:
                params["state"] = state
        separator = "&" if "?" in metadata.end_session_endpoint else "?"
        return metadata.end_session_endpoint + separator + urlencode(params)
