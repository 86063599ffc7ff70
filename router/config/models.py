"""The configuration file, as typed and frozen models. Unknown keys are errors."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from yarl import URL

from router.config.types import ByteCount, Duration, HostPort, check_cidrs

_ROUTE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HOST_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_host_pattern(host: str) -> str:
    """An exact DNS name or ``*.`` followed by one; lowercased, no port."""
    host = host.strip().lower().rstrip(".")
    name = host[2:] if host.startswith("*.") else host
    labels = name.split(".")
    if not name or not all(_HOST_LABEL_RE.match(label) for label in labels):
        raise ValueError(
            f"invalid host {host!r}: use a DNS name such as app.example.com or *.example.com"
        )
    return host


class HeaderRules(Model):
    """Headers to set (replacing any value), to add (after any value) and to remove."""

    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)

    @field_validator("set", "add")
    @classmethod
    def _check_set(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            _check_header_name(name)
            if any(ch in header_value for ch in "\r\n\0"):
                raise ValueError(f"header {name!r}: value contains CR, LF or NUL")
        return value

    @field_validator("remove")
    @classmethod
    def _check_remove(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_header_name(name)
        return value


def _check_header_name(name: str) -> None:
    if not _HEADER_NAME_RE.match(name):
        raise ValueError(f"invalid header name {name!r}")


class Timeouts(Model):
    connect: Duration = 5.0
    """Time to open a TCP connection to an endpoint."""
    read: Duration = 60.0
    """Longest silence while waiting for response bytes from the endpoint."""
    total: Duration | None = None
    """Deadline for the whole exchange, including the body (none by default: streams)."""


class PassiveHealth(Model):
    """Eject an endpoint after consecutive failures, for a back-off period."""

    max_failures: int = Field(5, ge=1)
    ejection: Duration = 30.0


class Endpoint(Model):
    url: str
    weight: int = Field(1, ge=1, le=100)
    version: dict[str, str] = Field(default_factory=dict)
    """Code version of this endpoint (repository, commit, image ...), for logs and provenance."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return validate_upstream_url(value)


def validate_upstream_url(value: str) -> str:
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"invalid upstream {value!r}: expected http://HOST[:PORT][/PATH]")
    if url.query_string or url.fragment or url.user:
        raise ValueError(f"invalid upstream {value!r}: no query, fragment or userinfo allowed")
    return value


EncodedAction = Literal["reject", "decode", "forward"]


class PathMatch(Model):
    """How a route's path matches, for backends that normalize paths more than Ingress
    does. SECURITY: each option widens what a route takes, so that a protected route's
    policy applies to every spelling that reaches its handler in such a backend."""

    case_sensitive: bool = True
    """False: ``/ADMIN`` and ``/Admin`` match a ``/admin`` route (Express, Spring, IIS)."""
    exact_trailing_slash: bool = False
    """True: an ``Exact`` route also matches its path with (or without) a final ``/``
    (Express without ``strict`` routing)."""
    encoded_delimiters: EncodedAction = "reject"
    """``%3B``, ``%23``, ``%3F`` in a path: ``reject`` (400), ``decode`` (the route also
    takes paths that match it once they are decoded, a ``;`` starting parameters and a
    ``#``/``?`` ending the path) or ``forward`` (opaque, as Ingress reads them)."""
    double_encoding: EncodedAction = "reject"
    """``%25`` followed by two hex digits (``%252e``): ``reject``, ``decode`` (the route
    also takes paths that match it once decoded twice) or ``forward``."""


def _check_plain_path(value: str) -> str:
    if (
        not value.startswith("/")
        or any(ch in "?#\\" or not "!" <= ch <= "~" for ch in value)
        or "//" in value
    ):
        raise ValueError(f"{value!r} is not a plain absolute path")
    return value


class PathRewrite(Model):
    """The path sent upstream: the matched ``Prefix`` replaced, or the whole path."""

    prefix: str | None = None
    """Replaces the route's ``Prefix`` path (``/`` strips it)."""
    full_path: str | None = None

    @field_validator("prefix", "full_path")
    @classmethod
    def _check_paths(cls, value: str | None) -> str | None:
        return None if value is None else _check_plain_path(value)

    @model_validator(mode="after")
    def _check_one(self) -> PathRewrite:
        if (self.prefix is None) == (self.full_path is None):
            raise ValueError("set exactly one of prefix and full_path")
        return self


class Redirect(Model):
    """The answer of ``builtin: redirect``: the request's URL with these parts replaced."""

    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    """None: none shown (the default port of the scheme)."""
    path: PathRewrite | None = None
    status_code: Literal[301, 302, 303, 307, 308] = 302

    @field_validator("hostname")
    @classmethod
    def _check_hostname(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("*."):
            raise ValueError("a redirect hostname is not a wildcard")
        return validate_host_pattern(value)


class RequestMatch(Model):
    """Conditions besides host and path (Gateway API HTTPRoute matches). Routes with the
    same host and path may differ by these: the one with a method, then the most header
    conditions, then the most query conditions, then the first listed is tried first; a
    request none of them takes goes on to shorter paths."""

    method: str | None = Field(None, pattern=r"^[A-Z]{1,16}$")
    headers: dict[str, str] = Field(default_factory=dict)
    """Header name (any case) -> exact value."""
    query: dict[str, str] = Field(default_factory=dict)
    """Query parameter -> exact value (of its first occurrence)."""

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            _check_header_name(name)
        return value

    @property
    def conditional(self) -> bool:
        return self.method is not None or bool(self.headers) or bool(self.query)


class Route(Model):
    name: str
    """Unique name; it labels metrics and log lines."""
    hosts: list[str] = Field(default_factory=list)
    """Exact names or ``*.example.com`` wildcards (one label). Empty: any host."""
    wildcard_depth: Literal["one", "any"] = "one"
    """How many labels a ``*.`` host stands for: ``one`` (Ingress semantics) or ``any``
    (the Gateway API's: ``*.example.com`` also takes ``a.b.example.com``). A more specific
    wildcard wins."""
    path: str = "/"
    path_type: Literal["Prefix", "Exact"] = "Prefix"
    path_match: PathMatch = Field(default_factory=PathMatch)
    """Options set here replace those of ``paths.match`` for this route."""
    match: RequestMatch = Field(default_factory=RequestMatch)
    """Method, header and query conditions (none: every request of the host and path)."""
    upstreams: list[Endpoint] = Field(default_factory=list)
    builtin: Literal["echo", "unavailable", "invalid_backend", "redirect"] | None = None
    """Answer from the router itself: ``echo`` shows what the router saw and would add;
    ``unavailable`` answers 503 (the route keeps its host and path claimed);
    ``invalid_backend`` answers 500 (a backend reference that cannot be resolved, as the
    Gateway API requires); ``redirect`` answers with ``redirect``."""
    redirect: Redirect | None = None
    """For ``builtin: redirect``: which parts of the request's URL the redirect changes."""
    rewrite: PathRewrite | None = None
    """The path sent upstream (``prefix`` only on ``Prefix`` routes)."""
    balancer: Literal["round_robin", "least_outstanding"] = "round_robin"
    strip_prefix: bool = False
    preserve_host: bool = True
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: int = Field(1, ge=0, le=10)
    """Extra attempts, on another endpoint, for idempotent requests whose connection failed."""
    max_body_size: ByteCount | None = None
    """Largest request body (defaults to ``limits.max_body_size``)."""
    health: PassiveHealth = Field(default_factory=PassiveHealth)
    request_headers: HeaderRules = Field(default_factory=HeaderRules)
    response_headers: HeaderRules = Field(default_factory=HeaderRules)
    websocket: bool = True
    listeners: list[str] = Field(default_factory=list)
    """Names of the listeners this route answers on. Empty: every listener."""
    https_redirect: bool = False
    """On plain-HTTP listeners, answer 308 to the same host, path and query over HTTPS."""
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-plugin settings for this route, validated by each plugin."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _ROUTE_NAME_RE.match(value):
            raise ValueError("route names use letters, digits, '.', '_' and '-' (max 128)")
        return value

    @field_validator("hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        return [validate_host_pattern(host) for host in value]

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("a route path starts with '/'")
        if any(ch in value for ch in "?#%\\;") or "//" in value:
            raise ValueError("a route path is a plain normalized path: no ?, #, %, \\, ; or //")
        segments = value.split("/")
        if "." in segments or ".." in segments:
            raise ValueError("a route path has no '.' or '..' segments")
        return value

    @model_validator(mode="after")
    def _check_target(self) -> Route:
        if bool(self.upstreams) == (self.builtin is not None):
            raise ValueError("a route needs either 'upstreams' or 'builtin' (exactly one)")
        if (self.builtin == "redirect") != (self.redirect is not None):
            raise ValueError("'builtin: redirect' and 'redirect' go together")
        for rewrite in (self.rewrite, self.redirect.path if self.redirect else None):
            if rewrite is not None and rewrite.prefix is not None and self.path_type != "Prefix":
                raise ValueError("a prefix rewrite needs a Prefix route")
        if self.rewrite is not None and self.strip_prefix:
            raise ValueError("set rewrite or strip_prefix, not both")
        return self


class AccessLog(Model):
    enabled: bool = True
    path: str = "-"
    """File to append JSON lines to; ``-`` is standard output. Reopened on SIGUSR1."""
    query: Literal["redacted", "omit"] = "redacted"
    """Log the query string with every value replaced by ``REDACTED``, or not at all."""


class Log(Model):
    """The router's own messages on standard error (the access log is separate)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    """``json``: one object per line, after the OpenTelemetry log data model."""


class Limits(Model):
    header_timeout: Duration = 10.0
    """Time a client has to send a complete request head."""
    body_timeout: Duration = 30.0
    """Longest silence while receiving a request body (then 408 and close); nginx's
    ``client_body_timeout``."""
    request_buffer_size: ByteCount = 1024 * 1024
    """Request bodies up to this size are read whole before the upstream is contacted
    (nginx's ``proxy_request_buffering``, in memory); a longer body is streamed once this
    much has arrived. 0 streams every body from its first byte."""
    body_min_rate: ByteCount = 500
    """Lowest average rate, in bytes per second, at which a request body may arrive once
    ``body_rate_grace`` has passed (then 408 and close). 0: no minimum."""
    body_rate_grace: Duration = 10.0
    """Time a request body is given before ``body_min_rate`` applies."""
    keepalive_timeout: Duration = 75.0
    max_request_line: ByteCount = 8190
    max_header_size: ByteCount = 8190
    """Largest single header line."""
    max_headers: int = Field(100, ge=1, le=1000)
    max_body_size: ByteCount = 100 * 1024 * 1024


class PathPolicy(Model):
    merge_slashes: bool = True
    """Treat ``//`` as ``/`` (and forward the merged path)."""
    reject_encoded_slash: bool = True
    """Reject ``%2F``, ``%5C`` and ``%00`` in paths with 400."""
    reject_encoded_controls: bool = True
    """Reject encoded control characters (``%00``-``%1F``, ``%7F``) in paths with 400."""
    match: PathMatch = Field(default_factory=PathMatch)
    """Path matching options of routes that do not set them in ``path_match``."""


def effective_path_match(route: Route, defaults: PathMatch) -> PathMatch:
    """The route's ``path_match`` options, the unset ones taken from ``defaults``."""
    own = route.path_match
    if not own.model_fields_set:
        return defaults
    return defaults.model_copy(update={name: getattr(own, name) for name in own.model_fields_set})


class Listener(Model):
    """The single public listener of older configurations (``listeners`` replaces it)."""

    listen: HostPort = "127.0.0.1:8080"
    tls_cert: str | None = None
    tls_key: str | None = None

    @model_validator(mode="after")
    def _check_tls(self) -> Listener:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        return self


class CertificateFiles(Model):
    """A certificate chain and its private key, as PEM files (watched for changes)."""

    cert: str
    key: str


class Hsts(Model):
    max_age: Duration = 31536000.0
    include_subdomains: bool = False
    preload: bool = False


class ClientCertificates(Model):
    """Ask TLS clients for a certificate signed by ``ca`` (mutual TLS)."""

    mode: Literal["optional", "required"] = "required"
    ca: str
    """PEM bundle of the certificate authorities client certificates must chain to."""
    subject_header: str | None = None
    """Send the verified subject to backends in this header (clients cannot set it)."""

    @field_validator("subject_header")
    @classmethod
    def _check_header(cls, value: str | None) -> str | None:
        if value is not None:
            _check_header_name(value)
        return value


class ListenerTls(Model):
    """TLS on a listener: certificates come from the certificate store (``tls``)."""

    min_version: Literal["1.2", "1.3"] = "1.2"
    hsts: Hsts | None = None
    """Send Strict-Transport-Security on every answer of this listener."""
    client_certificates: ClientCertificates | None = None


class ListenerSpec(Model):
    name: str
    listen: HostPort
    tls: ListenerTls | None = None
    https_redirect_port: int = Field(443, ge=1, le=65535)
    """Port named in the HTTPS redirects this plain listener answers (443: none shown)."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _ROUTE_NAME_RE.match(value):
            raise ValueError("listener names use letters, digits, '.', '_' and '-' (max 128)")
        return value


class Tls(Model):
    """The certificate store shared by every TLS listener."""

    certificates: list[CertificateFiles] = Field(default_factory=list)
    default_certificate: str | None = None
    """Host name whose certificate answers clients that send no SNI name, or one no
    certificate covers. Unset: such handshakes are refused."""
    watch_interval: Duration = 2.0
    """How often certificate files are checked for changes."""
    expiry_warning: Duration = 14 * 86400.0
    """Log a warning when a loaded certificate expires within this time."""
    session_ticket_lifetime: Duration = Field(3600.0, ge=60.0)
    """How long a session ticket key serves: every listener replaces its key this often,
    and tickets sealed with the previous key no longer resume."""

    @field_validator("default_certificate")
    @classmethod
    def _check_default(cls, value: str | None) -> str | None:
        return None if value is None else validate_host_pattern(value)


class Admin(Model):
    listen: HostPort = "127.0.0.1:9901"


class Drain(Model):
    delay: Duration = 5.0
    """After SIGTERM: keep accepting while /readyz fails, so load balancers notice."""
    grace: Duration = 30.0
    """Then: time given to in-flight requests before they are cut."""


class FileProvider(Model):
    watch: bool = True
    """Reload routes when the file changes (SIGHUP always reloads)."""
    interval: Duration = 1.0


class PluginEntry(Model):
    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class Config(Model):
    """The commons-router configuration file."""

    listener: Listener = Field(default_factory=Listener)
    listeners: list[ListenerSpec] = Field(default_factory=list)
    """Public listeners (replaces ``listener``); each route may name the ones it uses."""
    tls: Tls = Field(default_factory=Tls)
    admin: Admin = Field(default_factory=Admin)
    workers: int = Field(1, ge=1, le=64)
    trusted_proxies: list[str] = Field(default_factory=list)
    """CIDRs whose X-Forwarded-*, Forwarded and X-Request-Id headers are believed."""
    limits: Limits = Field(default_factory=Limits)
    paths: PathPolicy = Field(default_factory=PathPolicy)
    drain: Drain = Field(default_factory=Drain)
    access_log: AccessLog = Field(default_factory=AccessLog)
    log: Log = Field(default_factory=Log)
    file_provider: FileProvider = Field(default_factory=FileProvider)
    plugins: list[PluginEntry] = Field(default_factory=list)
    """Plugins to load, in the order their middleware wraps each request."""
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_workers_port(self) -> Config:
        if self.workers > 1 and any(
            spec.listen.rpartition(":")[2] == "0" for spec in self.public_listeners()
        ):
            raise ValueError("workers > 1 needs a fixed listener port (not 0)")
        return self

    @model_validator(mode="after")
    def _check_listeners(self) -> Config:
        if self.listeners and "listener" in self.model_fields_set:
            raise ValueError(
                "set either 'listener' or 'listeners', not both: move listener.listen to "
                "listeners[0].listen, and listener.tls_cert/tls_key to "
                "tls.certificates[0].cert/key with 'tls: {}' on that listener"
            )
        names = [spec.name for spec in self.listeners]
        problem = duplicate_names("listeners", names)
        if problem:
            raise ValueError(problem)
        known = set(names) or {DEFAULT_LISTENER}
        for route in self.routes:
            unknown = sorted(set(route.listeners) - known)
            if unknown:
                raise ValueError(
                    f"route {route.name!r} names unknown listeners {unknown}; "
                    f"defined: {sorted(known)}"
                )
        serves_tls = any(spec.tls is not None for spec in self.public_listeners())
        if (self.tls.certificates or self.tls.default_certificate) and not serves_tls:
            raise ValueError("tls.certificates are set but no listener has 'tls'")
        return self

    def public_listeners(self) -> list[ListenerSpec]:
        """``listeners``, or the one that the older ``listener`` section describes."""
        if self.listeners:
            return self.listeners
        legacy = self.listener
        return [
            ListenerSpec(
                name=DEFAULT_LISTENER,
                listen=legacy.listen,
                tls=ListenerTls() if legacy.tls_cert is not None else None,
            )
        ]

    def certificate_files(self) -> list[CertificateFiles]:
        """Every certificate file pair: ``tls.certificates`` and the older listener's."""
        files = list(self.tls.certificates)
        if not self.listeners and self.listener.tls_cert and self.listener.tls_key:
            files.append(CertificateFiles(cert=self.listener.tls_cert, key=self.listener.tls_key))
        return files

    @property
    def serves_tls(self) -> bool:
        return any(spec.tls is not None for spec in self.public_listeners())

    @field_validator("trusted_proxies")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        return check_cidrs(value)

    @field_validator("routes", "plugins")
    @classmethod
    def _check_unique_names(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        problem = duplicate_names(info.field_name or "", [entry.name for entry in value])
        if problem:
            raise ValueError(problem)
        return value


DEFAULT_LISTENER = "default"
"""The name of the listener an older single-``listener`` configuration describes."""


def duplicate_names(field_name: str, names: list[Any]) -> str | None:
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    if not duplicates:
        return None
    what = {"routes": "route name", "listeners": "listener name"}.get(
        field_name, "plugin listed twice"
    )
    return f"duplicate {what}: {', '.join(repr(d) for d in duplicates)}"
