"""Which namespace owns each host (unless ``shared_hosts``).

SECURITY: a host belongs to one namespace; Ingresses in other namespaces cannot add
routes to it, so one team cannot take over ``/checkout`` of another team's host. The rule
must hold through a redeploy (the owner's Ingress deleted and created again, maybe
younger than an intruder's), and through a router restart. So:

- a namespace that routes a host alone owns it, and keeps owning it while it routes it;
- when the owner stops routing it (its Ingress is deleted), it keeps the host for
  ``release_delay``: an Ingress created again in time finds the host still its own, and
  meanwhile no other namespace can route it;
- when several namespaces route a host and none held it before (at start, or after the
  owner's hold ran out), the owner is unclear: every route of that host answers 503 and is
  reported, until only one namespace routes it. Never a guess, such as "the oldest".

The state is the router's memory of owners, so the functions take the time (monotonic
seconds) instead of reading a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Owners:
    """Host -> owning namespace, and the hosts whose owner is unclear (-> claimants)."""

    owner: Mapping[str, str] = field(default_factory=dict)
    contested: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    released: Mapping[str, str] = field(default_factory=dict)
    """Hosts whose owner no longer routes them but keeps them for a while."""


class HostOwnership:
    def __init__(self, release_delay: float) -> None:
        self.release_delay = release_delay
        self._held: dict[str, str] = {}
        self._released_at: dict[str, float] = {}
        self._last = Owners()

    def resolve(self, claims: Iterable[tuple[str, str]], now: float) -> Owners:
        """The owners for ``claims`` (``(host, namespace)`` pairs) at time ``now``; the same
        object as the previous call when nothing changed."""
        by_host: dict[str, set[str]] = {}
        for host, namespace in claims:
            by_host.setdefault(host, set()).add(namespace)
        owner: dict[str, str] = {}
        contested: dict[str, tuple[str, ...]] = {}
        released: dict[str, str] = {}
        for host in list(self._held):
            if host in by_host and self._held[host] in by_host[host]:
                self._released_at.pop(host, None)
                continue
            since = self._released_at.setdefault(host, now)
            if now - since >= self.release_delay:
                del self._held[host]
                del self._released_at[host]
        for host, namespaces in by_host.items():
            held = self._held.get(host)
            if held is not None:
                owner[host] = held
                if held not in namespaces:
                    released[host] = held
            elif len(namespaces) == 1:
                (owner[host],) = namespaces
                self._held[host] = owner[host]
            else:
                contested[host] = tuple(sorted(namespaces))
        result = Owners(owner, contested, released)
        if result == self._last:
            return self._last
        self._last = result
        return result

    def next_release(self) -> float | None:
        """When the earliest hold of a host nobody routes any more runs out."""
        if not self._released_at:
            return None
        return min(self._released_at.values()) + self.release_delay


def host_problem(host: str, namespace: str, owners: Owners) -> tuple[bool, str] | None:
    """For a route of ``namespace`` on ``host``: None when it may serve; else whether it
    is kept answering 503 (True) or left out (False), and the problem message."""
    shown = host or "(any)"
    claimants = owners.contested.get(host)
    if claimants is not None:
        return True, (
            f"host {shown} is routed by Ingresses in namespaces {', '.join(claimants)} and "
            "none of them held it before, so its owner is unclear; every route of the host "
            "answers 503 until only one namespace routes it"
        )
    owner = owners.owner.get(host, namespace)
    if owner == namespace:
        return None
    if host in owners.released:
        return False, (
            f"host {shown} belongs to namespace {owner!r}, which stopped routing it only "
            "recently and keeps it for a while (as through a redeploy); route disabled"
        )
    return False, f"host {shown} belongs to namespace {owner!r}; route disabled"
