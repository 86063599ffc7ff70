"""Settings of the ``auth`` plugin and of each route's ``plugins.auth`` block."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from router.api import Duration

_ALGORITHMS = {
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_algorithms(value: list[str]) -> list[str]:
    for alg in value:
        if alg not in _ALGORITHMS:
            allowed = ", ".join(sorted(_ALGORITHMS))
            raise ValueError(f"algorithm {alg!r} is not allowed (asymmetric only: {allowed})")
    return value


class IssuerConfig(_Model):
    """One issuer of bearer tokens."""

    issuer: str
    """Exact ``iss`` value."""
    jwks_url: str
    """Where the issuer's public keys are; fetched only for tokens of this issuer."""
    audience: list[str] = Field(min_length=1)
    """Accepted ``aud`` values (at least one must match)."""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"], min_length=1)
    """Pinned signature algorithms; ``none`` and HMAC are never accepted."""
    leeway: Duration = 30.0
    """Clock skew allowed on ``exp``/``nbf``/``iat``."""

    @field_validator("algorithms")
    @classmethod
    def _algs(cls, value: list[str]) -> list[str]:
        return _check_algorithms(value)

    @field_validator("jwks_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an http(s) URL")
        return value


class BearerConfig(_Model):
    issuers: list[IssuerConfig] = Field(default_factory=list)
    jwks_cache: Duration = 600.0
    """How long fetched keys are used before they are fetched again."""
    jwks_min_refetch: Duration = 30.0
    """An unknown ``kid`` refetches the keys at most this often per issuer."""
    jwks_timeout: Duration = 5.0
    jwks_max_bytes: int = 256 * 1024


class OidcConfig(_Model):
    issuer: str
    """The provider's issuer URL; ``/.well-known/openid-configuration`` is read from it."""
    client_id: str
    client_secret: SecretStr | None = None
    """Confidential clients authenticate with ``client_secret_basic``."""
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"], min_length=1)
    """Accepted ID-token signature algorithms."""
    redirect_url: str | None = None
    """Absolute callback URL registered at the provider; default: this host's
    ``/.commons-router/callback``."""
    post_logout_redirect_url: str | None = None
    """Registered URL the provider sends the browser to after logout."""
    groups_claim: str = "groups"
    refresh_margin: Duration = 60.0
    """Refresh the access token this long before it expires, but never earlier than when
    three quarters of its lifetime have passed (see ``REFRESH_FRACTION``)."""
    timeout: Duration = 5.0
    """Timeout of each call to the provider."""
    login_timeout: Duration = 600.0
    """How long a started login may take."""
    max_login_flows: int = Field(5, ge=1, le=20)
    """Sign-ins one browser may have under way at once; a new one beyond this replaces the
    oldest (like oauth2-proxy's ``cookie-csrf-per-request-limit``). Each is one ~80-byte
    cookie."""
    leeway: Duration = 30.0

    @field_validator("algorithms")
    @classmethod
    def _algs(cls, value: list[str]) -> list[str]:
        return _check_algorithms(value)

    @field_validator("scopes")
    @classmethod
    def _openid(cls, value: list[str]) -> list[str]:
        if "openid" not in value:
            raise ValueError("scopes must include 'openid'")
        return value


class AssertionConfig(_Model):
    header: str = "X-Commons-Identity"
    algorithm: Literal["ES256", "EdDSA"] = "ES256"
    private_keys: list[SecretStr] = Field(default_factory=list)
    """PEM private keys; the first signs, all are published (rotation). Empty: a key is
    made at start (fine for one replica; give keys when running several)."""
    issuer: str = "commons-router"
    ttl: Duration = 60.0


class IdentityHeaders(_Model):
    user: str | None = "X-Forwarded-User"
    email: str | None = "X-Forwarded-Email"
    groups: str | None = "X-Forwarded-Groups"
    name: str | None = "X-Forwarded-Preferred-Username"
    access_token: str = "X-Forwarded-Access-Token"  # noqa: S105 (a header name)
    """Used on routes with ``pass_access_token``."""
    claims: dict[str, str] = Field(default_factory=dict)
    """Extra ``claim: Header-Name`` pairs."""


class Rule(_Model):
    """Matches a user when any listed item matches (an empty rule matches nobody)."""

    emails: list[str] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=list)
    """Email domains (of verified emails)."""
    groups: list[str] = Field(default_factory=list)
    claims: dict[str, list[Any]] = Field(default_factory=dict)
    """``claim: [accepted values]``; list claims match when they share a value."""
    users: list[str] = Field(default_factory=list)
    """``sub`` values."""


Method = Literal["session", "bearer"]


def _all_methods() -> list[Method]:
    return ["session", "bearer"]


class RouteAuth(_Model):
    """``routes[].plugins.auth``."""

    policy: Literal["public", "optional", "authenticated"] = "authenticated"
    """``public``: no authentication; ``optional``: identity passed when present;
    ``authenticated``: a signed-in user (or valid bearer token) is required."""
    allow: Rule | None = None
    """When set, only users matching it get in."""
    deny: Rule | None = None
    """Users matching it never get in."""
    methods: list[Method] = Field(default_factory=_all_methods, min_length=1)
    pass_access_token: bool = False
    """Send the user's access token upstream (``identity_headers.access_token``)."""
    pass_authorization: bool = False
    """Keep the client's ``Authorization`` header (removed by default)."""
    assertion: bool = True
    """Send the signed identity assertion (when ``assertion`` is configured)."""

    @model_validator(mode="after")
    def _rules(self) -> RouteAuth:
        if self.policy == "public" and (self.allow or self.deny):
            raise ValueError("a public route cannot have allow/deny rules")
        return self


class AuthConfig(_Model):
    oidc: OidcConfig | None = None
    bearer: BearerConfig = Field(default_factory=BearerConfig)
    default: RouteAuth = Field(default_factory=RouteAuth)
    """Policy of routes without a ``plugins.auth`` block."""
    identity_headers: IdentityHeaders = Field(default_factory=IdentityHeaders)
    assertion: AssertionConfig | None = None
    allowed_redirect_hosts: list[str] = Field(default_factory=list)
    """Hosts (``name`` or ``name:port``) a return URL may point to besides the current one."""
    logout_path: str = "/.commons-router/logout"
    forward_auth: bool = True
    """Answer ``GET /.commons-router/auth`` (nginx ``auth_request``, Traefik ForwardAuth)."""
    forward_auth_headers: Literal["any", "nginx", "traefik"] = "any"
    """Which headers from a trusted proxy name the original request: ``nginx``
    (``X-Original-URI``/``-Method``, host from ``Host``), ``traefik``
    (``X-Forwarded-Uri``/``-Method``/``-Host``), or ``any`` (both; they must agree). Name
    the proxy's own family so that headers it passes through from clients are ignored."""
    ext_authz: bool = False
    """Answer Envoy ``ext_authz`` HTTP checks under ``/.commons-router/ext-authz`` (Envoy
    Gateway ``SecurityPolicy`` ``extAuth.http``, Gateway API ``ExternalAuth``), from
    ``trusted_proxies`` only."""
    dev_login: bool = False
    """Built-in login without an identity provider: ``commons-router dev`` only, loopback only."""

    @field_validator("logout_path")
    @classmethod
    def _logout(cls, value: str) -> str:
        if not value.startswith(("/.commons-router/", "/.well-known/commons-router/")):
            raise ValueError("logout_path must be under /.commons-router/")
        return value
