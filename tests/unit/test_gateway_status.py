"""What the Gateway API status writer writes: conditions keep their lastTransitionTime
while their status holds, and other controllers' entries of an HTTPRoute's
``status.parents`` are kept as they are."""

from __future__ import annotations

from typing import Any

from router_plugins.kubernetes.gateway.status import (
    gateway_addresses,
    route_status,
    stamped,
)
from router_plugins.kubernetes.gateway.translate import condition

OURS = "commons-router.io/gateway-controller"


def test_last_transition_time_changes_only_with_the_status() -> None:
    before = [
        {**condition("Accepted", True, "Accepted", "", 1), "lastTransitionTime": "T0"},
        {**condition("ResolvedRefs", True, "ResolvedRefs", "", 1), "lastTransitionTime": "T0"},
    ]
    wanted = [
        condition("Accepted", True, "Accepted", "", 2),
        condition("ResolvedRefs", False, "BackendNotFound", "gone", 2),
        condition("PartiallyInvalid", True, "UnsupportedValue", "x", 2),
    ]
    assert [c["lastTransitionTime"] for c in stamped(wanted, before, "T1")] == ["T0", "T1", "T1"]


def test_other_controllers_entries_are_kept() -> None:
    theirs: dict[str, Any] = {
        "parentRef": {"name": "gw", "namespace": "infra"},
        "controllerName": "example.net/other",
        "conditions": [],
    }
    mine_before = {
        "parentRef": {"name": "gw", "namespace": "infra"},
        "controllerName": OURS,
        "conditions": [
            {**condition("Accepted", True, "Accepted", "", 1), "lastTransitionTime": "T0"}
        ],
    }
    stale = {**mine_before, "parentRef": {"name": "removed", "namespace": "infra"}}
    current = {"status": {"parents": [theirs, mine_before, stale]}}
    ours = [
        {
            "parentRef": {"name": "gw", "namespace": "infra"},
            "controllerName": OURS,
            "conditions": [condition("Accepted", True, "Accepted", "", 2)],
        }
    ]
    parents = route_status(ours, current, OURS, "T1")["parents"]
    # Theirs first and untouched; ours replaced (a parent no longer referenced dropped).
    assert parents[0] is theirs
    assert len(parents) == 2
    assert parents[1]["conditions"][0]["lastTransitionTime"] == "T0"
    assert parents[1]["conditions"][0]["observedGeneration"] == 2


def test_published_addresses_become_gateway_addresses() -> None:
    assert gateway_addresses([{"ip": "192.0.2.1"}, {"hostname": "lb.example.org"}]) == [
        {"type": "IPAddress", "value": "192.0.2.1"},
        {"type": "Hostname", "value": "lb.example.org"},
    ]
