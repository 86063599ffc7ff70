"""Settings of the ``tracing`` plugin."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.api import Duration

Propagator = Literal["tracecontext", "baggage", "b3", "b3multi", "jaeger"]
Exporter = Literal["otlp_http", "otlp_grpc", "console", "none"]

_BAGGAGE_KEY_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")
_DEFAULT_PROPAGATORS: list[Propagator] = ["tracecontext", "baggage"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserBaggage(Model):
    """Baggage entries naming the authenticated user, for every downstream service."""

    enabled: bool = True
    user_key: str = "user.id"
    account_key: str = "account.id"
    user_field: str = "user"
    """Access-log field the authentication plugin sets to the user's identity."""
    account_field: str = "account"
    """Access-log field with the user's account (tenant, organisation), if any."""
    pseudonymous: bool = True
    """Send a keyed hash (HMAC-SHA-256, 128 bits, base64url) instead of the identity."""
    hash_key: str | None = None
    """The HMAC key (e.g. ``${TRACING_HASH_KEY}``); without it a random one is made at
    start, so ids differ between replicas and restarts."""
    reserved_keys: list[str] = Field(default_factory=list)
    """More baggage keys clients may never send (``user_key`` and ``account_key`` always
    are)."""

    @field_validator("user_key", "account_key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        if not _BAGGAGE_KEY_RE.match(value):
            raise ValueError(f"invalid baggage key {value!r}")
        return value

    @field_validator("reserved_keys")
    @classmethod
    def _check_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            cls._check_key(key)
        return value


class TracingConfig(Model):
    service_name: str = "commons-router"
    sampling_ratio: float = Field(1.0, ge=0.0, le=1.0)
    """Share of new traces that are recorded; a trusted caller's decision is followed
    (parent-based)."""
    exporter: Exporter = "otlp_http"
    endpoint: str | None = None
    """Collector URL; default from ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, else ``http://localhost:4318/v1/traces`` (HTTP) or
    ``localhost:4317`` (gRPC)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers for the collector (e.g. an API key)."""
    export_timeout: Duration = 5.0
    queue_size: int = Field(4096, ge=16, le=1_000_000)
    """Finished spans waiting for export; when full, new spans are dropped, never waited for."""
    batch_size: int = Field(512, ge=1, le=100_000)
    schedule_delay: Duration = 1.0
    propagators: list[Propagator] = Field(default_factory=lambda: _DEFAULT_PROPAGATORS.copy())
    """Formats read from trusted callers and written to upstreams."""
    trusted_peers: list[str] = Field(default_factory=list)
    """CIDRs whose trace context and baggage are continued; anyone else starts a new trace
    (their trace id is kept as a link) and their baggage is dropped."""
    traceresponse: bool = True
    """Send ``traceresponse: 00-<trace id>-<span id>-<flags>`` with every response."""
    resource_attributes: dict[str, str] = Field(default_factory=dict)
    user_baggage: UserBaggage = Field(default_factory=UserBaggage)
    record_query: bool = False
    """Put ``url.query`` on spans (off: queries may carry secrets)."""

    @field_validator("trusted_peers")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"invalid CIDR {cidr!r}") from None
        return value

    @field_validator("propagators")
    @classmethod
    def _check_propagators(cls, value: list[Propagator]) -> list[Propagator]:
        if len(set(value)) != len(value):
            raise ValueError("a propagator is listed twice")
        return value

    @model_validator(mode="after")
    def _check_endpoint(self) -> TracingConfig:
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http:// or https:// URL")
        return self

