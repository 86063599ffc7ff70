"""Per-route access rules, compiled once per route table."""

from __future__ import annotations

from typing import Any

from router_plugins.auth.identity import Identity
from router_plugins.auth.settings import RouteAuth, Rule


class CompiledRule:
    __slots__ = ("claims", "domains", "emails", "groups", "users")

    def __init__(self, rule: Rule) -> None:
        self.emails = frozenset(e.lower() for e in rule.emails)
        self.domains = frozenset(d.lower().lstrip("@") for d in rule.domains)
        self.groups = frozenset(rule.groups)
        self.users = frozenset(rule.users)
        self.claims = {name: list(values) for name, values in rule.claims.items()}

    def matches(self, identity: Identity) -> bool:
        email = identity.email.lower() if identity.email and identity.email_verified else None
        if email is not None:
            if email in self.emails:
                return True
            if email.rpartition("@")[2] in self.domains:
                return True
        if self.groups and not self.groups.isdisjoint(identity.groups):
            return True
        if identity.subject in self.users:
            return True
        return any(_claim_matches(n, identity.claims.get(n), v) for n, v in self.claims.items())


def _claim_matches(name: str, value: Any, accepted: list[Any]) -> bool:
    if value is None:
        return False
    if name == "scope" and isinstance(value, str):
        value = value.split()  # OAuth scopes are one space-separated string
    if isinstance(value, list):
        return any(v in accepted for v in value if isinstance(v, str | int | bool))
    return value in accepted


class Policy:
    """The decision for one route."""

    __slots__ = ("allow", "deny", "settings")

    def __init__(self, settings: RouteAuth) -> None:
        self.settings = settings
        self.allow = CompiledRule(settings.allow) if settings.allow is not None else None
        self.deny = CompiledRule(settings.deny) if settings.deny is not None else None

    @property
    def public(self) -> bool:
        return self.settings.policy == "public"

    @property
    def required(self) -> bool:
        return self.settings.policy == "authenticated"

    def permits(self, identity: Identity) -> bool:
        if self.deny is not None and self.deny.matches(identity):
            return False
        return self.allow is None or self.allow.matches(identity)
