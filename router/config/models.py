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
    """Headers to set (replacing any value) and to remove."""

    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)

    @field_validator("set")
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


class Route(Model):
    name: str
    """Unique name; it labels metrics and log lines."""
    hosts: list[str] = Field(default_factory=list)
    """Exact names or ``*.example.com`` wildcards (one label). Empty: any host."""
    path: str = "/"
    path_type: Literal["Prefix", "Exact"] = "Prefix"
    path_match: PathMatch = Field(default_factory=PathMatch)
    """Options set here replace those of ``paths.match`` for this route."""
    upstreams: list[Endpoint] = Field(default_factory=list)
    builtin: Literal["echo", "unavailable"] | None = None
    """Answer from the router itself: ``echo`` shows what the router saw and would add;
    ``unavailable`` answers 503 (the route keeps its host and path claimed)."""
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
    listen: HostPort = "127.0.0.1:8080"
    tls_cert: str | None = None
    tls_key: str | None = None

    @model_validator(mode="after")
    def _check_tls(self) -> Listener:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        return self


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
        if self.workers > 1 and self.listener.listen.rpartition(":")[2] == "0":
            raise ValueError("workers > 1 needs a fixed listener port (not 0)")
        return self

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


def duplicate_names(field_name: str, names: list[Any]) -> str | None:
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    if not duplicates:
        return None
    what = "route name" if field_name == "routes" else "plugin listed twice"
    return f"duplicate {what}: {', '.join(repr(d) for d in duplicates)}"
