"""Login, callback, logout and back-channel logout endpoints."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from router.api import RouterHTTPError, context_of
from router_plugins.auth.devlogin import DEV_ISSUER, dev_claims, dev_login_page
from router_plugins.auth.flowcookies import FlowCookie, FlowCookies
from router_plugins.auth.oidc import IdpRejected, IdpUnavailable, OidcClient
from router_plugins.auth.pages import sign_out_page
from router_plugins.auth.provider_errors import provider_error_message
from router_plugins.auth.redirects import safe_return_url
from router_plugins.auth.settings import AuthConfig
from router_plugins.auth.tokens import TokenError
from router_plugins.auth.web import (
    authority,
    clear_cookie_on_response,
    origin_of,
    redirect,
    same_origin,
)
from router_plugins.sessions import Session, SessionService, StoreUnavailable, digest

logger = logging.getLogger("commons_router.auth")

LOGIN_PATH = "/.commons-router/login"
CALLBACK_PATH = "/.commons-router/callback"
BACKCHANNEL_PATH = "/.commons-router/backchannel-logout"
LOGGED_OUT_PATH = "/.commons-router/logged-out"

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
NOT_THIS_BROWSER = (
    "This sign-in is not valid in this browser: it was started in another browser, or a "
    "newer sign-in here replaced it."
)
USED = "This sign-in link was already used."
EXPIRED = "This sign-in took too long and has expired."
UNKNOWN = "This sign-in link is not valid (it is incomplete or was changed)."
OTHER_ISSUER = "This sign-in answer does not come from the configured identity provider."


def login_link(rd: str) -> str:
    return f"{LOGIN_PATH}?rd={quote(rd, safe='')}"


def start_again(rd: str = "/") -> tuple[tuple[str, str], ...]:
    return (("Start the sign-in again", login_link(rd)),)


class LoginHandlers:
    def __init__(self, config: AuthConfig, sessions: SessionService, oidc: OidcClient | None):
        self.config = config
        self.sessions = sessions
        self.oidc = oidc
        slots = config.oidc.max_login_flows if config.oidc is not None else 1
        self.flow_cookies = FlowCookies(sessions.cookie, slots)

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
        flows, stray = self.flow_cookies.found(request.headers.get("Cookie"))
        cookie_name = self.flow_cookies.choose(flows)
        flow = {
            "verifier": start.verifier,
            "nonce": start.nonce,
            "rd": rd,
            "redirect_uri": redirect_uri,
            "binding": hashlib.sha256(binding.encode()).hexdigest(),
            "cookie": cookie_name,
        }
        assert self.config.oidc is not None
        ttl = self.config.oidc.login_timeout
        try:
            await self.sessions.store.put_flow(start.state, flow, ttl)
        except StoreUnavailable as exc:
            logger.warning("login: %s", exc)
            raise RouterHTTPError(503, STORE_DOWN) from None
        response = redirect(start.url)
        # One small cookie per flow in progress, under one of a few fixed names (see
        # flowcookies.py): tabs signing in at once keep their own, and abandoned flows can
        # never pile up. It outlives the flow so that a late callback can say "expired".
        cookie = self.sessions.cookie
        for name in stray:
            cookie.clear(response, name=name)
        cookie.set(
            response,
            FlowCookies.value(start.state, binding),
            name=cookie_name,
            max_age=2 * ttl,
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
    ) -> Session:
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
        return session

    # --- GET /.commons-router/callback ------------------------------------------------
    async def callback(self, request: web.BaseRequest) -> web.StreamResponse:
        oidc = self.oidc
        if oidc is None:
            raise RouterHTTPError(404, "No login is configured on this router.")
        query = request.query
        state = query.get("state", "")
        ours = self.flow_cookies.of_state(request.headers.get("Cookie"), state)
        if ours is not None:
            # Whatever the outcome, this flow is over: its cookie goes with the answer.
            clear_cookie_on_response(request, self.sessions.cookie, ours.name)
        try:
            metadata = await oidc.metadata()
        except IdpUnavailable as exc:
            logger.warning("callback: identity provider unavailable: %s", exc)
            raise RouterHTTPError(503, IDP_DOWN, links=start_again()) from None
        store = self.sessions.store
        try:
            flow = await store.take_flow(state)
        except StoreUnavailable as exc:
            logger.warning("callback: %s", exc)
            raise RouterHTTPError(503, STORE_DOWN, links=start_again()) from None
        rd = str(flow.get("rd") or "/") if flow is not None else "/"
        iss = query.get("iss")
        checked = iss is not None or metadata.iss_parameter
        if flow is not None and checked and iss != metadata.issuer:
            # SECURITY: RFC 9207 mix-up defence. The provider says it names itself in every
            # answer; one naming another issuer (or none) is refused, and its flow is spent.
            logger.warning("callback: authorization response with iss %r refused", iss)
            raise RouterHTTPError(400, OTHER_ISSUER, links=start_again(rd))
        bound = flow is not None and _bound_to_browser(flow, ours)
        if "error" in query:
            # Only our own words, unless the answer belongs to a sign-in this browser has
            # under way: then the provider's text, marked as such.
            description = query.get("error_description") if bound else None
            status = 403 if query["error"] == "access_denied" else 400
            message = provider_error_message(query["error"], description)
            raise RouterHTTPError(status, message, links=start_again(rd))
        if flow is None:
            return await self._no_flow(request, state, ours)
        if not bound:
            # SECURITY: login CSRF — a callback URL made in another browser is refused.
            raise RouterHTTPError(400, NOT_THIS_BROWSER, links=start_again(rd))
        code = query.get("code", "")
        if not code:
            raise RouterHTTPError(
                400, "The identity provider sent no authorization code.", links=start_again(rd)
            )
        try:
            tokens = await oidc.exchange(code, str(flow["verifier"]), str(flow["redirect_uri"]))
            if not tokens.id_token:
                raise TokenError("the provider sent no ID token")
            claims = await oidc.verify_id_token(tokens.id_token, str(flow["nonce"]))
        except IdpUnavailable as exc:
            logger.warning("callback: identity provider unavailable: %s", exc)
            raise RouterHTTPError(503, IDP_DOWN, links=start_again(rd)) from None
        except IdpRejected as exc:
            logger.info("callback: code refused: %s", exc)
            raise RouterHTTPError(
                400, "The identity provider refused this sign-in.", links=start_again(rd)
            ) from None
        except TokenError as exc:
            logger.warning("callback: bad ID token: %s", exc)
            raise RouterHTTPError(
                400, f"The ID token is not valid: {exc}.", links=start_again(rd)
            ) from None
        user = {k: v for k, v in claims.items() if k not in _TOKEN_CLAIMS}
        response = redirect(rd)
        session = await self._open_session(
            request,
            response,
            user,
            issuer=str(claims["iss"]),
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            id_token=tokens.id_token,
            access_expires=tokens.access_expires,
            access_lifetime=tokens.lifetime,
        )
        assert self.config.oidc is not None
        try:
            # A replay of this callback (the Back button) finds the page, not an error.
            await store.put_flow(
                state,
                {"rd": rd, "session": session.key},
                self.config.oidc.login_timeout,
                kind="done",
            )
        except StoreUnavailable as exc:
            logger.warning("callback: %s", exc)
        return response

    async def _no_flow(
        self, request: web.BaseRequest, state: str, ours: FlowCookie | None
    ) -> web.StreamResponse:
        """A callback whose flow is gone: used, expired, or never ours."""
        store = self.sessions.store
        try:
            done = await store.read_flow(state, kind="done")
            if done is not None:
                rd = self._return_url(request, str(done.get("rd") or "/"))
                session_id = self.sessions.cookie.read(request)
                if (
                    session_id
                    and hmac.compare_digest(digest(session_id), str(done.get("session", "")))
                    and await store.get(session_id) is not None
                ):
                    return redirect(rd)
                raise RouterHTTPError(400, USED, links=start_again(rd))
        except StoreUnavailable as exc:
            logger.warning("callback: %s", exc)
            raise RouterHTTPError(503, STORE_DOWN, links=start_again()) from None
        if ours is not None:
            raise RouterHTTPError(400, EXPIRED, links=start_again())
        raise RouterHTTPError(400, UNKNOWN, links=start_again())

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
            back = self.config.oidc.post_logout_redirect_url
            state = await self._remember_logout(rd) if _is_logged_out_url(back) else None
            end = await self.oidc.end_session_url(id_token, back, state)
            location = end or rd
        response = redirect(location, 303)
        cookie.clear(response)
        return response

    async def _remember_logout(self, rd: str) -> str | None:
        """Keep ``rd`` for the provider's return to ``/.commons-router/logged-out``."""
        assert self.config.oidc is not None
        state = secrets.token_urlsafe(24)
        try:
            await self.sessions.store.put_flow(
                state, {"rd": rd}, self.config.oidc.login_timeout, kind="logout"
            )
        except StoreUnavailable as exc:
            logger.warning("logout: %s", exc)
            return None
        return state

    # --- GET /.commons-router/logged-out ----------------------------------------------
    async def logged_out(self, request: web.BaseRequest) -> web.StreamResponse:
        """Where the provider sends the browser after its logout: on to the ``rd`` given
        at sign-out (checked again), else ``/``."""
        if request.method not in ("GET", "HEAD"):
            raise RouterHTTPError(405, "Use GET.", headers={"Allow": "GET, HEAD"})
        state = request.query.get("state", "")
        try:
            kept = await self.sessions.store.take_flow(state, kind="logout") if state else None
        except StoreUnavailable as exc:
            logger.warning("logged-out: %s", exc)
            kept = None
        rd = str(kept.get("rd") or "/") if kept is not None else "/"
        return redirect(self._return_url(request, rd), 303)

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


def _is_logged_out_url(url: str | None) -> bool:
    if not url:
        return False
    try:
        return urlsplit(url).path == LOGGED_OUT_PATH
    except ValueError:
        return False


def _bound_to_browser(flow: dict[str, Any], ours: FlowCookie | None) -> bool:
    """True when this browser holds the cookie the flow was started with."""
    if ours is None or ours.name != flow.get("cookie"):
        return False
    expected = str(flow.get("binding", ""))
    return hmac.compare_digest(hashlib.sha256(ours.binding.encode()).hexdigest(), expected)


def _backchannel_error(message: str) -> web.Response:
    return web.json_response(
        {"error": "invalid_request", "error_description": message},
        status=400,
        headers={"Cache-Control": "no-store"},
    )
