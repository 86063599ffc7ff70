"""Settings of the ``ip_filter`` plugin."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.api import check_cidrs


class IpRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: list[str] = Field(default_factory=list)
    """CIDRs allowed; empty: everyone not denied."""
    deny: list[str] = Field(default_factory=list)
    """CIDRs always denied."""

    @field_validator("allow", "deny")
    @classmethod
    def _check(cls, value: list[str]) -> list[str]:
        return check_cidrs(value)


class IpFilterConfig(IpRules):
    """Default rules for every route; a route's own block replaces them."""
