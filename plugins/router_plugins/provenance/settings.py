"""Settings of the ``provenance`` plugin."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.api import ByteCount, Duration

_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_FIELD_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

DEFAULT_FIELDS = (
    "repository",
    "commit",
    "dirty",
    "version",
    "image",
    "image_digest",
    "code",
    "namespace",
    "pod",
)
"""Endpoint version fields shown in the public header (``node`` is left out by default)."""


DEFAULT_HEADER = "Provenance"
DEFAULT_LABEL = "prov"
DEFAULT_TAG = "commons-router"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContentDigest(Model):
    enabled: bool = False
    """Add ``Content-Digest`` (SHA-256) to buffered responses and cover it by the signature."""
    max_size: ByteCount = 64 * 1024
    """Largest body that is digested; larger and streamed bodies are signed without it."""


class ProvenanceConfig(Model):
    header: str = DEFAULT_HEADER
    """Name of the response header carrying the RFC 8941 dictionary."""
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_FIELDS))
    """Endpoint version fields (from the route table) that are published."""
    sign: Literal["always", "requested", "never"] = "always"
    """``always``: sign every response (RFC 9421, Ed25519); ``requested``: only responses
    to requests that carry ``Accept-Signature`` (RFC 9421 section 5, as ``inspect`` sends);
    ``never``. ``true``/``false`` mean always/never."""
    key_file: str | None = None
    """PEM file with the Ed25519 private key (PKCS#8)."""
    key: str | None = None
    """The same key inline, e.g. ``${PROVENANCE_KEY}``."""
    retired_public_keys: list[str] = Field(default_factory=list)
    """PEM public keys still published in the JWKS (key rotation)."""
    label: str = DEFAULT_LABEL
    """Label of the signature in ``Signature-Input`` / ``Signature``."""
    tag: str = DEFAULT_TAG
    """Signed ``tag`` parameter: which application made the signature."""
    content_digest: ContentDigest = Field(default_factory=ContentDigest)
    page: bool = True
    """Serve the human page at ``/.well-known/commons-router/provenance``."""
    source_dir: str | None = None
    """Development: a git checkout whose commit (and dirtiness) is the code version of
    every endpoint. Set by ``commons-router dev --source DIR``."""
    source_interval: Duration = 2.0
    """How often ``source_dir`` is re-read."""

    @field_validator("sign", mode="before")
    @classmethod
    def _sign_booleans(cls, value: object) -> object:
        if isinstance(value, bool):
            return "always" if value else "never"
        return value

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str) -> str:
        if not _HEADER_NAME_RE.match(value):
            raise ValueError(f"invalid header name {value!r}")
        if value.lower() in {"signature", "signature-input", "content-digest", "x-request-id"}:
            raise ValueError(f"{value!r} is used by the signature itself")
        return value

    @field_validator("label")
    @classmethod
    def _check_label(cls, value: str) -> str:
        if not _LABEL_RE.match(value):
            raise ValueError("a signature label is lowercase letters, digits, '_' and '-'")
        return value

    @field_validator("tag")
    @classmethod
    def _check_tag(cls, value: str) -> str:
        if not value or not value.isascii() or not value.isprintable():
            raise ValueError("the tag is printable ASCII")
        return value

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _FIELD_RE.match(name):
                raise ValueError(f"invalid field name {name!r}: lowercase letters, digits, _ . -")
        return value

    @model_validator(mode="after")
    def _check_key(self) -> ProvenanceConfig:
        if self.key_file is not None and self.key is not None:
            raise ValueError("set key_file or key, not both")
        if self.source_interval < 0.1:
            raise ValueError("source_interval must be at least 100ms")
        return self
