"""Login, callback, logout and back-channel logout endpoints."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any

from aiohttp import web

from router.api import RouterHTTPError, context_of
from router_plugins.auth.config import AuthConfig
from router_plugins.auth.devlogin import DEV_ISSUER, dev_claims, dev_login_page
from router_plugins.auth.oidc import IdpRejected, IdpUnavailable, OidcClient
from router_plugins.auth.pages import sign_out_page
from router_plugins.auth.redirects import safe_return_url
from router_plugins.auth.tokens import TokenError
from router_plugins.auth.web import authority, origin_of, redirect, same_origin
from router_plugins.sessions import SessionService, StoreUnavailable
from router_plugins.sessions.model import digest

logger = logging.getLogger("commons_router.auth")

LOGIN_PATH = "/.commons-router/login"
CALLBACK_PATH = "/.commons-router/callback"
BACKCHANNEL_PATH = "/.commons-router/backchannel-logout"

# Claims that describe the token rather than the user: not kept in the session.
_TOKEN_CLAIMS = frozenset(
    {
        "nonce",
        "at_hash",
        "c_hash",
        "aud",
        "exp",
        "iat",
        "nbf",
        "azp",
        "jti",
        "auth_time",
        "acr",
        "amr",
    }
)

IDP_DOWN = "The identity provider cannot be reached right now. Please try again in a moment."
STORE_DOWN = "Sign-in is unavailable right now (the session store cannot be reached)."


class LoginHandlers:
    def __init__(self, config: AuthConfig, sessions: SessionService, oidc: OidcClient | None):
        self.config = config
        self.sessions = sessions
        self.oidc = oidc

    def _return_url(self, request: web.BaseRequest, value: str | None) -> str:
        ctx = context_of(request)
        safe = safe_return_url(
            value,
            scheme=ctx.scheme,
            host=authority(request, ctx),
            allowed_hosts=self.config.allowed_redirect_hosts,
        )
        return safe or "/"

    def _redirect_uri(self, request: web.BaseRequest) -> str:
        if self.config.oidc is not None and self.config.oidc.redirect_url:
            return self.config.oidc.redirect_url
        return origin_of(request, context_of(request)) + CALLBACK_PATH

    def _flow_cookie(self, state: str) -> str:
        return self.sessions.cookie.named("login-" + digest(state)[:12])

    # --- GET/POST /.commons-router/login ----------------------------------------------
    async def login(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.config.dev_login:
            return await self._dev_login(request)
        if self.oidc is None:
            raise RouterHTTPError(404, "No login is configured on this router.")
        if request.method not in ("GET", "HEAD"):
            raise RouterHTTPError(405, "Use GET.", headers={"Allow": "GET, HEAD"})
        rd = self._return_url(request, request.query.get("rd"))
        redirect_uri = self._redirect_uri(request)
        try:
            start = await self.oidc.start_login(redirect_uri)
        except IdpUnavailable as exc:
            logger.warning("login: identity provider unavailable: %s", exc)
            raise RouterHTTPError(503, IDP_DOWN) from None
        binding = secrets.token_urlsafe(16)
        flow = {
            "verifier": start.verifier,
            "nonce": start.nonce,
            "rd": rd,
            "redirect_uri": redirect_uri,
            "binding": hashlib.sha256(binding.encode()).hexdigest(),
        }
        assert self.config.oidc is not None
        ttl = self.config.oidc.login_timeout
        try:
            await self.sessions.store.put_flow(start.state, flow, ttl)
        except StoreUnavailable as exc:
            logger.warning("login: %s", exc)
            raise RouterHTTPError(503, STORE_DOWN) from None
        response = redirect(start.url)
        # One small cookie per flow in progress, bound to the flow's state and removed at
        # the callback: tabs logging in at once do not overwrite each other.
        self.sessions.cookie.set(
            response, binding, name=self._flow_cookie(start.state), max_age=ttl
        )
        return response

    async def _dev_login(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            rd = self._return_url(request, request.query.get("rd"))
            return dev_login_page(LOGIN_PATH, rd, self.config.logout_path)
        if request.method != "POST":
            raise RouterHTTPError(405, "Use GET or POST.", headers={"Allow": "GET, POST"})
        if not same_origin(request, context_of(request)):
            raise RouterHTTPError(403, "Cross-site login refused.")
        form = await request.post()
        claims = dev_claims(str(form.get("name", "")), str(form.get("groups", "")))
        if claims is None:
            raise RouterHTTPError(400, "Give a name of letters, digits and ._@+- only.")
        logger.warning("INSECURE development login as %r (commons-router dev only)", claims["sub"])
        response = redirect(self._return_url(request, str(form.get("rd", "/"))), 303)
        await self._open_session(request, response, claims, issuer=DEV_ISSUER)
        return response

    async def _open_session(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        claims: dict[str, Any],
        *,
        issuer: str,
        **tokens: Any,
    ) -> None:
        cookie = self.sessions.cookie
        store = self.sessions.store
        try:
            old = cookie.read(request)
            if old:
                await store.delete(old)  # SECURITY: no fixation; the old id dies here
            session = await store.create(
                claims, issuer=issuer, sid=claims.get("sid") or None, **tokens
            )
        except StoreUnavailable as exc:
            logger.warning("login: %s", exc)
            raise RouterHTTPError(503, STORE_DOWN) from None
        cookie.set(response, session.id)
        context_of(request).add_log_field("user", claims.get("email") or claims.get("sub"))

    # --- GET /.commons-router/callback ------------------------------------------------
    async def callback(self, request: web.BaseRequest) -> web.StreamResponse:
        oidc = self.oidc
        if oidc is None:
            raise RouterHTTPError(404, "No login is configured on this router.")
        query = request.query
        state = query.get("state", "")
        if "error" in query:
            message = f"The identity provider did not sign you in ({query['error'][:100]})."
            raise RouterHTTPError(403 if query["error"] == "access_denied" else 400, message)
        try:
            flow = await self.sessions.store.take_flow(state)
        except StoreUnavailable as exc:
            logger.warning("callback: %s", exc)
            raise RouterHTTPError(503, STORE_DOWN) from None
        if flow is None:
            raise RouterHTTPError(
                400, "This sign-in link has expired or was already used. Please start again."
            )
        flow_cookie = self._flow_cookie(state)
        binding = self.sessions.cookie.read(request, flow_cookie) or ""
        expected = str(flow.get("binding", ""))
        if not hmac.compare_digest(hashlib.sha256(binding.encode()).hexdigest(), expected):
            # SECURITY: login CSRF — a callback URL made in another browser is refused.
            raise RouterHTTPError(400, "This sign-in was started in another browser.")
        code = query.get("code", "")
        if not code:
            raise RouterHTTPError(400, "The identity provider sent no authorization code.")
        try:
            tokens = await oidc.exchange(code, str(flow["verifier"]), str(flow["redirect_uri"]))
            if not tokens.id_token:
                raise TokenError("the provider sent no ID token")
            claims = await oidc.verify_id_token(tokens.id_token, str(flow["nonce"]))
        except IdpUnavailable as exc:
            logger.warning("callback: identity provider unavailable: %s", exc)
            raise RouterHTTPError(503, IDP_DOWN) from None
        except IdpRejected as exc:
            logger.info("callback: code refused: %s", exc)
            raise RouterHTTPError(400, "The identity provider refused this sign-in.") from None
        except TokenError as exc:
            logger.warning("callback: bad ID token: %s", exc)
            raise RouterHTTPError(400, f"The ID token is not valid: {exc}.") from None
        user = {k: v for k, v in claims.items() if k not in _TOKEN_CLAIMS}
        response = redirect(str(flow.get("rd") or "/"))
        await self._open_session(
            request,
            response,
            user,
            issuer=str(claims["iss"]),
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            id_token=tokens.id_token,
            access_expires=tokens.access_expires,
        )
        self.sessions.cookie.clear(response, name=flow_cookie)
        return response

    # --- POST /.commons-router/logout -------------------------------------------------
    async def logout(self, request: web.BaseRequest) -> web.StreamResponse:
        ctx = context_of(request)
        if request.method in ("GET", "HEAD"):
            rd = self._return_url(request, request.query.get("rd"))
            return sign_out_page(authority(request, ctx), self.config.logout_path, rd)
        if request.method != "POST":
            raise RouterHTTPError(405, "Sign out with POST.", headers={"Allow": "GET, POST"})
        if not same_origin(request, ctx):
            # SECURITY: a cross-site form or link cannot sign the user out (or in).
            raise RouterHTTPError(403, "Cross-site sign-out refused.")
        rd = self._return_url(request, request.query.get("rd"))
        if request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            if form.get("rd"):
                rd = self._return_url(request, str(form["rd"]))
        cookie = self.sessions.cookie
        session_id = cookie.read(request)
        id_token = None
        if session_id:
            try:
                session = await self.sessions.store.get(session_id, cached=False)
                if session is not None:
                    id_token = session.id_token
                await self.sessions.store.delete(session_id)
            except StoreUnavailable as exc:
                logger.warning("logout: %s", exc)
                raise RouterHTTPError(503, STORE_DOWN) from None
        location = rd
        if self.oidc is not None and id_token:
            assert self.config.oidc is not None
            end = await self.oidc.end_session_url(
                id_token, self.config.oidc.post_logout_redirect_url
            )
            location = end or rd
        response = redirect(location, 303)
        cookie.clear(response)
        return response

    # --- POST /.commons-router/backchannel-logout -------------------------------------
    async def backchannel(self, request: web.BaseRequest) -> web.StreamResponse:
        oidc = self.oidc
        if oidc is None:
            raise RouterHTTPError(404, "No identity provider is configured.")
        if request.method != "POST":
            raise RouterHTTPError(405, "Use POST.", headers={"Allow": "POST"})
        form = await request.post()
        token = form.get("logout_token")
        if not isinstance(token, str) or not token:
            return _backchannel_error("logout_token is missing")
        try:
            claims = await oidc.verify_logout_token(token)
        except TokenError as exc:
            logger.warning("back-channel logout refused: %s", exc)
            return _backchannel_error(str(exc))
        except IdpUnavailable as exc:
            logger.warning("back-channel logout: %s", exc)
            raise RouterHTTPError(503, IDP_DOWN) from None
        sid = claims.get("sid")
        sub = claims.get("sub")
        try:
            ended = await self.sessions.store.delete_for(
                str(claims["iss"]),
                sid=sid if isinstance(sid, str) else None,
                sub=sub if isinstance(sub, str) and not sid else None,
            )
        except StoreUnavailable as exc:
            logger.warning("back-channel logout: %s", exc)
            raise RouterHTTPError(503, STORE_DOWN) from None
        logger.info("back-channel logout ended %d session(s)", ended)
        return web.Response(status=200, headers={"Cache-Control": "no-store"})


def _backchannel_error(message: str) -> web.Response:
    return web.json_response(
        {"error": "invalid_request", "error_description": message},
        status=400,
        headers={"Cache-Control": "no-store"},
    )
