"""What a plugin contributes to the commands, besides serving requests.

``commons-router dev`` asks every installed plugin for a :class:`DevPreset`: the settings it
wants in a zero-configuration development proxy (or none to stay out). ``commons-router
inspect`` asks for a :class:`SignedStatementProfile`: how a plugin publishes a signed
statement about each response (header, signature label and tag, where the keys are), so the
inspector checks exactly what the plugin signs without the core knowing the plugin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class DevOptions:
    """What ``commons-router dev`` was asked for."""

    source: str | None
    """``--source DIR``: the app's git checkout, or None."""
    loopback: bool
    """True when the public listener is on a loopback address only."""
    environ: Mapping[str, str] = field(default_factory=dict)
    """The environment (e.g. ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""


@dataclass(frozen=True, slots=True)
class DevPreset:
    """A plugin's entry in the development proxy's configuration."""

    order: int
    """Position in the plugin chain: lower runs first (outermost)."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The plugin's ``config`` block, validated like any configuration."""
    requires: tuple[str, ...] = ()
    """Other plugins that must take part too; without them this one stays out."""


@dataclass(frozen=True, slots=True)
class SignedStatementProfile:
    """How a plugin signs a statement about each response (RFC 9421)."""

    header: str
    """The response header that holds the statement (an RFC 8941 dictionary)."""
    label: str
    """The signature's label in ``Signature-Input``."""
    tag: str
    """The signed ``tag`` parameter."""
    keys_path: str
    """Path, on the same origin, of the JWKS with the public keys."""
    required_components: tuple[str, ...]
    """Components a valid signature must cover, besides the header itself."""
    requested_components: tuple[str, ...]
    """Components asked for in ``Accept-Signature``, in order."""

    def accept_signature(self) -> str:
        inner = " ".join(self.requested_components)
        return f'{self.label}=({inner});tag="{self.tag}"'
