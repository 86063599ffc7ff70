"""Who the user is, whatever proved it (a session or a bearer token)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    issuer: str
    email: str | None
    email_verified: bool
    name: str | None
    groups: tuple[str, ...]
    claims: dict[str, Any]
    source: Literal["session", "bearer", "dev"]
    access_token: str | None = None
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    """Values derived from this identity (e.g. its header values), computed once."""

    @property
    def user(self) -> str:
        """What the access log and ``X-Forwarded-User`` show."""
        return self.email or self.subject

    @classmethod
    def from_claims(
        cls,
        claims: dict[str, Any],
        *,
        source: Literal["session", "bearer", "dev"],
        groups_claim: str = "groups",
        access_token: str | None = None,
    ) -> Identity:
        raw_groups = claims.get(groups_claim, ())
        if isinstance(raw_groups, str):
            raw_groups = [raw_groups]
        groups = tuple(str(g) for g in raw_groups) if isinstance(raw_groups, list | tuple) else ()
        email = claims.get("email")
        name = claims.get("preferred_username") or claims.get("name")
        return cls(
            subject=str(claims.get("sub", "")),
            issuer=str(claims.get("iss", "")),
            email=str(email) if isinstance(email, str) and email else None,
            # Tokens without the claim are taken as verified only when the issuer asserts
            # the email at all; providers that know better send email_verified=false.
            email_verified=claims.get("email_verified", True) is not False,
            name=str(name) if isinstance(name, str) and name else None,
            groups=groups,
            claims=claims,
            source=source,
            access_token=access_token,
        )
