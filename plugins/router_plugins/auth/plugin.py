"""``auth``: who the user is (session or bearer token), whether they may pass, and what the
backend is told about them."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from router.api import (
    DevOptions,
    DevPreset,
    Handler,
    Middleware,
    Plugin,
    PluginConfigError,
    PluginServices,
    RequestContext,
    Route,
    RouterHTTPError,
    context_of,
    split_host_port,
)
from router_plugins.auth.assertion import AssertionSigner
from router_plugins.auth.extauthz import EXT_AUTHZ_PREFIX, AllowAnswers
from router_plugins.auth.identity import Identity
from router_plugins.auth.jwks import JwksCache, KeysUnavailable
from router_plugins.auth.login import (
    BACKCHANNEL_PATH,
    CALLBACK_PATH,
    IDP_DOWN,
    LOGGED_OUT_PATH,
    LOGIN_PATH,
    LoginHandlers,
    login_link,
)
from router_plugins.auth.oidc import IdpUnavailable, OidcClient
from router_plugins.auth.policy import Policy
from router_plugins.auth.refresh import Refresher
from router_plugins.auth.settings import AuthConfig, RouteAuth
from router_plugins.auth.tokens import JwtVerifier, TokenError, TrustedIssuer
from router_plugins.auth.web import (
    clean_header_value,
    clear_cookie_on_response,
    is_browser,
    redirect,
)
from router_plugins.sessions import SESSIONS, Session, SessionService, StoreUnavailable

logger = logging.getLogger("commons_router.auth")

_KNOWN_LIMIT = 10_000
# Parsed ``Cookie`` headers (session id, what goes upstream): a browser sends the same
# header on every request. Bounded in entries and in the length of a header it keeps.
_COOKIE_MEMO_LIMIT = 2_048
_COOKIE_MEMO_MAX_LEN = 2_048
_KEEP = ""
"""Marker in the cookie memo: the header goes upstream unchanged."""
AUTH_PATH = "/.commons-router/auth"
JWKS_PATH = "/.well-known/commons-router/jwks.json"
SESSION_DOWN = "Your session cannot be checked right now (the session store is unreachable)."


def _loopback(listen: str) -> bool:
    host = split_host_port(listen)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AuthPlugin(Plugin[AuthConfig]):
    name = "auth"
    config_model = AuthConfig
    route_config_model = RouteAuth
    guards_access = True

    @classmethod
    def dev_preset(cls, options: DevOptions) -> DevPreset | None:
        """The built-in development login (INSECURE: any name, no identity provider) at
        ``/.commons-router/login``, on loopback listeners only. Pages stay open without
        login; the user's identity goes to the app once signed in."""
        if not options.loopback:
            return None
        login = {"dev_login": True, "default": {"policy": "optional"}}
        return DevPreset(order=40, config=login, requires=("sessions",))

    def __init__(self, config: AuthConfig, services: PluginServices) -> None:
        super().__init__(config, services)
        self.sessions: SessionService | None = None
        self.oidc: OidcClient | None = None
        self.bearer: JwtVerifier | None = None
        self.refresher: Refresher | None = None
        self.signer: AssertionSigner | None = None
        self.login: LoginHandlers | None = None
        self._policies: dict[str, Policy] = {}
        self._known: dict[str, tuple[object, Identity]] = {}
        # Verified bearer tokens: token -> (identity, exp). A hit is one dict lookup and a
        # clock read; an entry never outlives the token's ``exp``.
        self._tokens: dict[str, tuple[Identity, float]] = {}
        # Raw Cookie header -> (session id or None, upstream Cookie: _KEEP, None to remove,
        # or the header without the session cookies).
        self._cookies: dict[str, tuple[str | None, str | None]] = {}
        self._discovery: asyncio.Task[None] | None = None
        self._default = Policy(config.default)
        headers = config.identity_headers
        owned = [
            headers.user,
            headers.email,
            headers.groups,
            headers.name,
            headers.access_token,
            *headers.claims.values(),
        ]
        if config.assertion is not None:
            owned.append(config.assertion.header)
        for name in owned:
            if name:
                services.protect_header(name)
        self._ext_authz_answers = AllowAnswers(name for name in owned if name)
        self._sign_in_paths: frozenset[str] = frozenset()

    async def start(self) -> None:
        config = self.config
        services = self.services
        if config.dev_login:
            if not services.dev_mode:
                raise PluginConfigError(
                    "dev_login only works under `commons-router dev`", ("dev_login",)
                )
            listeners = services.router_config.public_listeners()
            if not all(_loopback(spec.listen) for spec in listeners):
                raise PluginConfigError(
                    "dev_login only works on a loopback listener", ("dev_login",)
                )
            logger.warning("INSECURE development login is enabled: anyone can sign in as anyone")
        self.sessions = services.lookup(SESSIONS)
        if (config.oidc is not None or config.dev_login) and self.sessions is None:
            raise PluginConfigError(
                "OIDC and dev login need the 'sessions' plugin listed before 'auth'"
            )
        if config.oidc is not None:
            self.oidc = OidcClient(
                config.oidc, services.http, jwks_min_refetch=config.bearer.jwks_min_refetch
            )
            assert self.sessions is not None
            self.refresher = Refresher(
                self.sessions.store,
                self.oidc,
                margin=config.oidc.refresh_margin,
                timeout=config.oidc.timeout,
            )
        if config.bearer.issuers:
            bearer = config.bearer
            self.bearer = JwtVerifier(
                [
                    TrustedIssuer(
                        issuer=i.issuer,
                        keys=JwksCache(
                            i.jwks_url,
                            services.http,
                            ttl=bearer.jwks_cache,
                            min_refetch=bearer.jwks_min_refetch,
                            timeout=bearer.jwks_timeout,
                            max_bytes=bearer.jwks_max_bytes,
                        ),
                        audience=tuple(i.audience),
                        algorithms=tuple(i.algorithms),
                        leeway=i.leeway,
                    )
                    for i in bearer.issuers
                ]
            )
        if config.assertion is not None:
            self.signer = AssertionSigner(config.assertion)
        if self.sessions is not None:
            self.login = LoginHandlers(config, self.sessions, self.oidc)
        self._sign_in_paths = frozenset(self.reserved_paths()) - {AUTH_PATH}
        if config.ext_authz and not services.router_config.trusted_proxies:
            logger.warning(
                "ext_authz is on but trusted_proxies is empty: every check will be denied"
            )
        if self.oidc is not None:
            # Read the provider's discovery document now, so a wrong issuer shows in the log
            # at start; requests retry by themselves if the provider is not up yet.
            self._discovery = asyncio.create_task(self._discover(self.oidc))

    async def _discover(self, oidc: OidcClient) -> None:
        try:
            metadata = await oidc.metadata()
        except IdpUnavailable as exc:
            logger.warning("OIDC discovery failed (logins answer 503 until it works): %s", exc)
        else:
            logger.info("OIDC provider %s discovered", metadata.issuer)

    async def stop(self) -> None:
        if self._discovery is not None and not self._discovery.done():
            self._discovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._discovery

    # --- endpoints on every host ------------------------------------------------------
    def reserved_paths(self) -> Mapping[str, Handler]:
        paths: dict[str, Handler] = {}
        if self.login is not None:
            paths[LOGIN_PATH] = self.login.login
            paths[self.config.logout_path] = self.login.logout
            if self.oidc is not None:
                paths[CALLBACK_PATH] = self.login.callback
                paths[BACKCHANNEL_PATH] = self.login.backchannel
                paths[LOGGED_OUT_PATH] = self.login.logged_out
        if self.config.forward_auth:
            paths[AUTH_PATH] = self.forward_auth
        if self.signer is not None:
            paths[JWKS_PATH] = self.jwks
        return paths

    def reserved_prefixes(self) -> Mapping[str, Handler]:
        return {EXT_AUTHZ_PREFIX: self.ext_authz} if self.config.ext_authz else {}

    async def jwks(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self.signer is not None
        return web.json_response(self.signer.jwks, headers={"Cache-Control": "max-age=300"})

    async def forward_auth(self, request: web.BaseRequest) -> web.StreamResponse:
        """nginx ``auth_request`` / Traefik ForwardAuth: 202 + identity, 401 or 403, for the
        request a trusted proxy names (method, host, URI), with that path's route policy."""
        ctx = context_of(request)
        original = self.services.original_request(request, self.config.forward_auth_headers)
        if original.forwarded:
            ctx.add_log_field("auth_for", f"{original.method} {original.host}{original.path}")
        route = original.route
        policy = self._policies.get(route.name, self._default) if route else self._default
        no_store = {"Cache-Control": "no-store"}
        if policy.public:
            return web.Response(status=202, headers=no_store)
        identity = await self._identify(request, ctx, policy)
        if identity is None:
            if policy.required:
                raise RouterHTTPError(401, "Sign in first.", headers=self._challenge())
            return web.Response(status=202, headers=no_store)
        if not policy.permits(identity):
            raise self._forbidden(identity, original.path, original.query)
        response = web.Response(status=202, headers=no_store)
        name = route.name if route is not None else "forward-auth"
        for header, value in self._identity_headers(identity, policy.settings, name).items():
            response.headers[header] = value
        ctx.add_log_field("user", identity.user)
        return response

    async def ext_authz(self, request: web.BaseRequest) -> web.StreamResponse:
        """Envoy ``ext_authz`` (HTTP): 200 + identity, 401, 403 or a login redirect, for the
        request a trusted proxy names (its method and ``Host``, the target after the prefix),
        with that path's route policy."""
        ctx = context_of(request)
        original = self.services.prefixed_request(request, EXT_AUTHZ_PREFIX)
        if original is None:
            raise RouterHTTPError(403, "Only a trusted proxy may ask for a decision here.")
        path, query = original.path, original.query
        ctx.add_log_field("auth_for", f"{original.method} {original.host}{path}")
        answers = self._ext_authz_answers
        if path == AUTH_PATH or path.startswith(EXT_AUTHZ_PREFIX):
            # Reached through the gateway, the decision endpoints would tell a client the
            # decisions (and identity headers) of other paths: never let them through.
            raise RouterHTTPError(403, "The router's decision endpoints are not served here.")
        if path in self._sign_in_paths:
            return answers.allow({})  # sign-in and sign-out must work without a session
        route = original.route
        policy = self._policies.get(route.name, self._default) if route else self._default
        if policy.public:
            return answers.allow({})
        identity = await self._identify(request, ctx, policy)
        if identity is None:
            if policy.required:
                return self._unauthenticated(request, path, query)
            return answers.allow({})
        if not policy.permits(identity):
            raise self._forbidden(identity, path, query)
        settings = policy.settings
        name = route.name if route is not None else "ext-authz"
        raw_cookie = request.headers.get("Cookie")
        ctx.add_log_field("user", identity.user)
        return answers.allow(
            self._identity_headers(identity, settings, name),
            remove_authorization=not settings.pass_authorization,
            upstream_cookie=self._cookie_parts(raw_cookie)[1] if raw_cookie else "",
        )

    # --- per route ------------------------------------------------------------------
    def middleware(self, route: Route, route_config: Any) -> Middleware | None:
        policy = Policy(route_config) if route_config is not None else self._default
        self._policies[route.name] = policy
        if policy.public:
            if self.sessions is None:
                return None

            async def public(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
                raw = request.headers.get("Cookie")
                if raw:
                    self._forward_cookie(context_of(request), self._cookie_parts(raw)[1])
                return await handler(request)

            return public
        route_name = route.name
        settings = policy.settings
        keep_authorization = settings.pass_authorization
        required = policy.required
        by_bearer = "bearer" in settings.methods
        by_session = "session" in settings.methods
        # Decisions and upstream headers per identity, computed once per (identity, route)
        # and tied to this route's policy object, so a reloaded route table decides afresh.
        memo_key = ("route", route_name)

        def upstream_for(identity: Identity) -> tuple[bool, dict[str, str | None]] | None:
            """(permitted, headers for the backend); None when they must be built per
            request (a signed assertion carries its own time)."""
            if self.signer is not None and settings.assertion:
                return None
            memo: tuple[Policy, bool, dict[str, str | None]] | None = identity.memo.get(memo_key)
            if memo is not None and memo[0] is policy:
                return memo[1], memo[2]
            headers: dict[str, str | None] = {}
            if not keep_authorization:
                # The backend learns who the user is from the router, not the token.
                headers["Authorization"] = None
            headers.update(self._identity_headers(identity, settings, route_name))
            permitted = policy.permits(identity)
            identity.memo[memo_key] = (policy, permitted, headers)
            return permitted, headers

        async def authenticate(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            ctx = context_of(request)
            incoming = request.headers
            raw_cookie = incoming.get("Cookie")
            identity: Identity | None = None
            found = False
            # Fast paths: a token verified or a session read lately by this process.
            authorization = incoming.get("Authorization")
            if by_bearer and authorization and authorization[:7].lower() == "bearer ":
                if self.bearer is not None:
                    hit = self._tokens.get(authorization[7:].strip())
                    if hit is not None and hit[1] > time.time():
                        identity = hit[0]
                        found = True
            elif by_session and raw_cookie and self.sessions is not None:
                session_id = self._cookie_parts(raw_cookie)[0]
                if session_id:
                    session = self.sessions.store.cached(session_id)
                    if session is not None and (
                        self.refresher is None or not self.refresher.due(session)
                    ):
                        identity = self._identity_of(session)
                        found = True
            if not found:
                identity = await self._identify(request, ctx, policy)
            if identity is None:
                if required:
                    return self._unauthenticated(request, ctx.path, ctx.query)
                if raw_cookie:
                    self._forward_cookie(ctx, self._cookie_parts(raw_cookie)[1])
                return await handler(request)
            known = upstream_for(identity)
            if known is None:
                if not policy.permits(identity):
                    raise self._forbidden(identity, ctx.path, ctx.query)
                if raw_cookie:
                    self._forward_cookie(ctx, self._cookie_parts(raw_cookie)[1])
                if not keep_authorization:
                    ctx.remove_upstream_header("Authorization")
                for name, value in self._identity_headers(identity, settings, route_name).items():
                    ctx.add_upstream_header(name, value)
            else:
                if not known[0]:
                    raise self._forbidden(identity, ctx.path, ctx.query)
                if raw_cookie:
                    self._forward_cookie(ctx, self._cookie_parts(raw_cookie)[1])
                ctx.add_upstream_headers(known[1])
            ctx.add_log_field("user", identity.user)
            return await handler(request)

        return authenticate

    async def _identify(
        self, request: web.BaseRequest, ctx: RequestContext, policy: Policy
    ) -> Identity | None:
        methods = policy.settings.methods
        authorization = request.headers.get("Authorization", "")
        if "bearer" in methods and self.bearer and authorization[:7].lower() == "bearer ":
            return await self._bearer_identity(authorization[7:].strip())
        if "session" in methods and self.sessions is not None:
            return await self._session_identity(request, required=policy.required)
        return None

    async def _bearer_identity(self, token: str) -> Identity:
        assert self.bearer is not None
        try:
            claims = await self.bearer.verify(token)
        except TokenError as exc:
            raise RouterHTTPError(
                401,
                f"The bearer token was refused: {exc}.",
                headers=self._challenge("invalid_token"),
            ) from None
        except KeysUnavailable as exc:
            logger.warning("bearer token: %s", exc)
            raise RouterHTTPError(
                503, "The token issuer's keys cannot be fetched right now."
            ) from None
        identity = self._remember(
            token, claims, lambda: Identity.from_claims(claims, source="bearer", access_token=token)
        )
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            if len(self._tokens) >= _KNOWN_LIMIT:
                self._tokens.clear()
            self._tokens[token] = (identity, float(exp))
        return identity

    async def _session_identity(
        self, request: web.BaseRequest, *, required: bool = True
    ) -> Identity | None:
        sessions = self.sessions
        assert sessions is not None
        session_id = sessions.cookie.read(request)
        if not session_id:
            return None
        try:
            session = await sessions.store.get(session_id)
            if session is not None and self.refresher is not None:
                session = await self.refresher.fresh(session)
        except StoreUnavailable as exc:
            logger.warning("session lookup failed: %s", exc)
            if not required:
                return None  # optional identity: carry on anonymously (less, never more)
            raise RouterHTTPError(503, SESSION_DOWN) from None
        except IdpUnavailable as exc:
            logger.warning("token refresh failed: %s", exc)
            raise RouterHTTPError(503, IDP_DOWN) from None
        if session is None:
            # Unknown, ended, or its refresh was refused: the dead cookie goes too.
            clear_cookie_on_response(request, sessions.cookie)
            return None
        return self._identity_of(session)

    def _identity_of(self, session: Session) -> Identity:
        found = session
        groups_claim = self.config.oidc.groups_claim if self.config.oidc else "groups"
        return self._remember(
            session.id,
            session,
            lambda: Identity.from_claims(
                {**found.claims, "iss": found.issuer},
                source="dev" if self.config.dev_login else "session",
                groups_claim=groups_claim,
                access_token=found.access_token,
            ),
        )

    def _remember(self, key: str, source: object, build: Callable[[], Identity]) -> Identity:
        """The identity built from ``source`` (a cached session or verified token), reused
        for as long as the store or verifier hands out that same object."""
        known = self._known.get(key)
        if known is not None and known[0] is source:
            return known[1]
        identity = build()
        if len(self._known) >= _KNOWN_LIMIT:
            self._known.clear()
        self._known[key] = (source, identity)
        return identity

    def _unauthenticated(self, request: web.BaseRequest, path: str, query: str) -> web.Response:
        if self.login is not None and is_browser(request):
            target = path + (f"?{query}" if query else "")
            return redirect(f"{LOGIN_PATH}?rd={quote(target, safe='')}")
        raise RouterHTTPError(401, "Sign in first.", headers=self._challenge())

    @staticmethod
    def _challenge(error: str | None = None) -> dict[str, str]:
        value = 'Bearer realm="commons-router"'
        if error:
            value += f', error="{error}"'
        return {"WWW-Authenticate": value, "Cache-Control": "no-store"}

    def _forbidden(self, identity: Identity, path: str, query: str) -> RouterHTTPError:
        message = f"You are signed in as {identity.user}, who may not open this page."
        if identity.source == "bearer" or self.login is None:
            return RouterHTTPError(403, message)
        # The next step: sign out, or sign out and come back here as someone else.
        logout = self.config.logout_path
        here = path + (f"?{query}" if query else "")
        again = f"{logout}?rd={quote(login_link(here), safe='')}"
        return RouterHTTPError(
            403, message, links=(("Sign in as someone else", again), ("Sign out", logout))
        )

    def _cookie_parts(self, raw: str) -> tuple[str | None, str | None]:
        """The session id in a ``Cookie`` header and the header the backend may see
        (``_KEEP``: unchanged; None: none at all), memoized per header value."""
        parts = self._cookies.get(raw)
        if parts is not None:
            return parts
        if self.sessions is None:
            return None, _KEEP
        cookie = self.sessions.cookie
        prefix = cookie.name
        upstream: str | None = _KEEP
        if prefix in raw:
            # SECURITY: backends never see the session id (it would let them act as the
            # user), nor the login-flow cookies that share its name as a prefix.
            kept = [
                part.strip()
                for part in raw.split(";")
                if part.strip() and not part.strip().startswith(prefix)
            ]
            upstream = "; ".join(kept) if kept else None
        parts = (cookie.value_in(raw), upstream)
        if len(raw) <= _COOKIE_MEMO_MAX_LEN:
            if len(self._cookies) >= _COOKIE_MEMO_LIMIT:
                self._cookies.clear()
            self._cookies[raw] = parts
        return parts

    @staticmethod
    def _forward_cookie(ctx: RequestContext, upstream: str | None) -> None:
        if upstream is None:
            ctx.remove_upstream_header("Cookie")
        elif upstream:  # _KEEP is empty: the client's header goes as it is
            ctx.add_upstream_header("Cookie", upstream)

    def _identity_headers(
        self, identity: Identity, settings: RouteAuth, route: str
    ) -> dict[str, str]:
        memo_key = ("headers", settings.pass_access_token)
        static: dict[str, str] | None = identity.memo.get(memo_key)
        if static is None:
            static = self._static_headers(identity, settings.pass_access_token)
            identity.memo[memo_key] = static
        if self.signer is None or not settings.assertion:
            return static
        assertion = clean_header_value(self.signer.sign(identity, route))
        return {**static, self.signer.config.header: assertion}

    def _static_headers(self, identity: Identity, pass_access_token: bool) -> dict[str, str]:
        names = self.config.identity_headers
        out: dict[str, str] = {}
        if names.user:
            out[names.user] = identity.subject
        if names.email and identity.email:
            out[names.email] = identity.email
        if names.groups and identity.groups:
            out[names.groups] = ",".join(identity.groups)
        if names.name and identity.name:
            out[names.name] = identity.name
        for claim, header in names.claims.items():
            value = identity.claims.get(claim)
            if isinstance(value, str | int | float | bool):
                out[header] = str(value)
        if pass_access_token and identity.access_token:
            out[names.access_token] = identity.access_token
        return {k: clean_header_value(v) for k, v in out.items()}
