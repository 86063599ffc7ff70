"""Settings of the ``sessions`` plugin."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from router.api import Duration
from router_plugins.sessions.crypto import parse_key


class SentinelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hosts: list[str] = Field(min_length=1)
    """Sentinel ``host:port`` addresses."""
    service_name: str
    db: int = 0
    password: SecretStr | None = None
    """Password of the Redis master."""
    sentinel_password: SecretStr | None = None
    tls: bool = False


class RedisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretStr | None = None
    """``redis://[:password@]host:port/db``, ``rediss://`` for TLS, or ``unix://``."""
    sentinel: SentinelConfig | None = None
    timeout: Duration = 1.0
    """Timeout of each Redis command and connection attempt."""
    tls_ca_file: str | None = None
    """CA bundle that signs the Redis server's certificate (``rediss://``; default: the
    system's)."""

    @model_validator(mode="after")
    def _one(self) -> RedisConfig:
        if (self.url is None) == (self.sentinel is None):
            raise ValueError("set exactly one of 'url' and 'sentinel'")
        if self.url is not None and not self.url.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("the Redis url must start with redis://, rediss:// or unix://")
        return self


class SessionsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Literal["memory", "redis"] = "memory"
    redis: RedisConfig | None = None
    idle_timeout: Duration = Field(3600.0, gt=0)
    """A session unused this long ends."""
    lifetime: Duration = Field(12 * 3600.0, gt=0)
    """A session ends this long after login, however active."""
    encryption_keys: list[SecretStr] = Field(default_factory=list)
    """Base64 32-byte keys; the first encrypts, all decrypt (rotation). Required for Redis."""
    cookie_name: str = Field("commons-router-session", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """Gets the ``__Host-`` prefix when the listener has TLS."""
    cache: Duration = Field(1.0, ge=0)
    """How long a worker may reuse a session it read, before asking the store again."""
    prefix: str = "commons-router:"
    """Key prefix in Redis."""

    @field_validator("encryption_keys")
    @classmethod
    def _keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            parse_key(key.get_secret_value())
        return value

    @model_validator(mode="after")
    def _store(self) -> SessionsConfig:
        if self.store == "redis":
            if self.redis is None:
                raise ValueError("store 'redis' needs a 'redis' block (url or sentinel)")
            if not self.encryption_keys:
                raise ValueError(
                    "store 'redis' needs 'encryption_keys' (e.g. `openssl rand -base64 32`)"
                )
        return self
