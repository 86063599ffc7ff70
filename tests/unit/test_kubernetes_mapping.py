"""Ingress -> routes, table-driven against YAML fixtures of real API objects."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
from typing import Any

import pytest

from router.config.models import Route
from router_plugins.kubernetes.builder import RouteBuilder
from router_plugins.kubernetes.endpoints import SERVICE_NAME_LABEL
from router_plugins.kubernetes.mapping import ClassSelection, Cluster, build_routes
from router_plugins.kubernetes.objects import key
from router_plugins.kubernetes.ownership import HostOwnership
from router_plugins.kubernetes.version import pod_info
from router_plugins.kubernetes.watch import LAST_APPLIED, slim
from tests.support.kubeapi import load_objects

SELECTION = ClassSelection("commons-router", "commons-router.io/ingress-controller")
SHOP_DIGEST = "sha256:9b8e7f6a5d4c3b2a19087f6e5d4c3b2a19087f6e5d4c3b2a19087f6e5d4c3b2a"


def cluster_of(*fixtures: str) -> Cluster:
    stores: dict[str, dict[str, Any]] = {
        "Ingress": {},
        "IngressClass": {},
        "Service": {},
        "EndpointSlice": {},
        "Pod": {},
    }
    for fixture in fixtures:
        for obj in load_objects(fixture):
            stores[obj["kind"]][key(obj)] = pod_info(obj) if obj["kind"] == "Pod" else obj
    return Cluster(
        ingresses=stores["Ingress"],
        ingress_classes=stores["IngressClass"],
        services=stores["Service"],
        slices=stores["EndpointSlice"],
        pods=stores["Pod"],
    )


def summary(route: Route) -> tuple[str, list[str], str, str, list[str]]:
    return (
        route.name,
        route.hosts,
        route.path,
        route.path_type,
        [endpoint.url for endpoint in route.upstreams]
        or ["503" if route.builtin == "unavailable" else "?"],
    )


CASES = [
    pytest.param(
        ["shop.yaml"],
        [
            (
                "shop.shop.rule0.path0",
                ["shop.example.com"],
                "/",
                "Prefix",
                # Terminating and not-serving endpoints are left out; the one that is in
                # both slices appears once; no conditions at all means serving.
                ["http://10.244.1.17:8080", "http://10.244.3.9:8080"],
            ),
            (
                "shop.shop.rule0.path1",
                ["shop.example.com"],
                "/healthz",
                "Exact",
                ["http://10.244.1.17:9090", "http://10.244.3.9:9090"],
            ),
        ],
        [],
        id="service-port-by-number-and-name",
    ),
    pytest.param(
        ["edge-cases.yaml"],
        [
            ("docs.docs.default", [], "/", "Prefix", ["https://[fd00:10:244::7]:8443"]),
            (
                "docs.docs.rule0.path0",
                ["*.docs.example.org"],
                "/guide",
                "Prefix",
                ["https://[fd00:10:244::7]:8443"],
            ),
            ("docs.docs.rule1.path0", [], "/", "Prefix", ["https://[fd00:10:244::7]:8443"]),
        ],
        [],
        id="wildcard-implementation-specific-default-backend-ipv6",
    ),
    pytest.param(
        ["classes.yaml"],
        [
            (
                "apps.by-class-name.rule0.path0",
                ["a.example.com"],
                "/",
                "Prefix",
                ["http://10.244.0.5:8080"],
            ),
            (
                "apps.legacy-ours.rule0.path0",
                ["c.example.com"],
                "/",
                "Prefix",
                ["http://10.244.0.5:8080"],
            ),
        ],
        [],
        id="class-name-and-legacy-annotation",
    ),
    pytest.param(
        ["classes.yaml", "default-class.yaml"],
        [
            (
                "apps.by-class-name.rule0.path0",
                ["a.example.com"],
                "/",
                "Prefix",
                ["http://10.244.0.5:8080"],
            ),
            (
                "apps.legacy-ours.rule0.path0",
                ["c.example.com"],
                "/",
                "Prefix",
                ["http://10.244.0.5:8080"],
            ),
            (
                "apps.no-class.rule0.path0",
                ["e.example.com"],
                "/",
                "Prefix",
                ["http://10.244.0.5:8080"],
            ),
        ],
        [],
        id="default-class-takes-classless-ingresses",
    ),
    pytest.param(
        ["problems.yaml"],
        [
            # Bad settings: nothing is served, but the host and path stay claimed (503).
            ("apps.bad-annotation.rule0.path0", ["bad.example.com"], "/", "Prefix", ["503"]),
            (
                "apps.partly-broken.rule0.path0",
                ["partly.example.com"],
                "/ok",
                "Prefix",
                ["http://10.244.0.8:8080"],
            ),
            *[
                (
                    f"apps.partly-broken.rule0.path{i}",
                    ["partly.example.com"],
                    path,
                    "Prefix",
                    ["503"],
                )
                for i, path in [
                    (1, "/missing"),
                    (2, "/wrong-port"),
                    (3, "/empty"),
                    (4, "/bucket"),
                    (7, "/external"),
                ]
            ],
        ],
        [
            (
                "ingress/apps/bad-annotation",
                None,
                "annotation commons-router.io/read-timout: unknown annotation",
            ),
            ("ingress/apps/bad-annotation", None, "annotation commons-router.io/retries: "),
            (
                "ingress/apps/partly-broken",
                "apps.partly-broken.rule0.path1",
                "service apps/nope not found",
            ),
            (
                "ingress/apps/partly-broken",
                "apps.partly-broken.rule0.path2",
                "service apps/web has no port 81",
            ),
            (
                "ingress/apps/partly-broken",
                "apps.partly-broken.rule0.path3",
                "service apps/empty has no serving endpoints",
            ),
            (
                "ingress/apps/partly-broken",
                "apps.partly-broken.rule0.path4",
                "resource backends are not supported",
            ),
            ("ingress/apps/partly-broken", "apps.partly-broken.rule0.path5", "path"),
            (
                "ingress/apps/partly-broken",
                "apps.partly-broken.rule0.path6",
                "unknown pathType 'Glob'",
            ),
            (
                "ingress/apps/partly-broken",
                "apps.partly-broken.rule0.path7",
                "ExternalName, which is not supported",
            ),
        ],
        id="problems-disable-only-their-routes",
    ),
]


@pytest.mark.parametrize(("fixtures", "expected_routes", "expected_problems"), CASES)
def test_ingress_mapping(
    fixtures: list[str],
    expected_routes: list[tuple[str, list[str], str, str, list[str]]],
    expected_problems: list[tuple[str, str | None, str]],
) -> None:
    routes, problems = build_routes(cluster_of(*fixtures), SELECTION)
    assert [summary(route) for route in routes] == expected_routes
    assert len(problems) == len(expected_problems), problems
    for problem, (source, route_name, fragment) in zip(problems, expected_problems, strict=True):
        assert problem.source == source
        assert problem.route == route_name
        assert fragment in problem.message, problem.message


def test_annotations_set_route_settings() -> None:
    routes, _ = build_routes(cluster_of("shop.yaml"), SELECTION)
    route = routes[0]
    assert route.timeouts.read == 30.0
    assert route.retries == 2
    assert route.max_body_size == 5 * 1024 * 1024
    docs, _ = build_routes(cluster_of("edge-cases.yaml"), SELECTION)
    assert all(r.strip_prefix for r in docs)


def test_plugin_options_annotation_goes_to_the_route() -> None:
    cluster = cluster_of("classes.yaml")
    ingress = dict(cluster.ingresses["apps/by-class-name"])
    ingress["metadata"] = {
        **ingress["metadata"],
        "annotations": {"commons-router.io/plugin.ip_filter": "{allow: [10.0.0.0/8]}"},
    }
    cluster.ingresses = {"apps/by-class-name": ingress}
    (route,), problems = build_routes(cluster, SELECTION)
    assert problems == ()
    assert route.plugins == {"ip_filter": {"allow": ["10.0.0.0/8"]}}


def test_path_match_annotation_goes_to_the_route() -> None:
    cluster = cluster_of("classes.yaml")
    ingress = dict(cluster.ingresses["apps/by-class-name"])
    ingress["metadata"] = {
        **ingress["metadata"],
        "annotations": {
            "commons-router.io/path-match": "{case_sensitive: false, exact_trailing_slash: true}"
        },
    }
    cluster.ingresses = {"apps/by-class-name": ingress}
    (route,), problems = build_routes(cluster, SELECTION)
    assert problems == ()
    assert route.path_match.case_sensitive is False
    assert route.path_match.exact_trailing_slash is True
    # Options the annotation leaves out still come from paths.match.
    assert route.path_match.model_fields_set == {"case_sensitive", "exact_trailing_slash"}


@pytest.mark.parametrize(
    ("annotation", "value", "fragment"),
    [
        ("plugin.ip_filter", "[not, a, mapping]", "expected a YAML/JSON mapping"),
        ("plugin.ip_filter", "{unclosed", "not valid YAML"),
        ("connect-timeout", "soon", "invalid duration"),
        ("max-body-size", "lots", "invalid size"),
        ("balancer", "random", "round_robin"),
        ("backend-protocol", "grpc", "expected 'http' or 'https'"),
        ("request-headers", "{set: {'Bad Header': x}}", "invalid header name"),
        ("path-match", "{encoded_delimiters: strip}", "'reject', 'decode' or 'forward'"),
        ("path-match", "{case_insensitive: true}", "Extra inputs are not permitted"),
        ("auth", "none", "unknown annotation"),
    ],
)
def test_bad_annotation_is_a_problem(annotation: str, value: str, fragment: str) -> None:
    cluster = cluster_of("classes.yaml")
    ingress = dict(cluster.ingresses["apps/by-class-name"])
    ingress["metadata"] = {
        **ingress["metadata"],
        "annotations": {f"commons-router.io/{annotation}": value},
    }
    cluster.ingresses = {
        "apps/by-class-name": ingress,
        **{k: v for k, v in cluster.ingresses.items() if k == "apps/legacy-ours"},
    }
    routes, problems = build_routes(cluster, SELECTION)
    # Only the Ingress with the bad annotation loses its routes: they answer 503.
    assert [(r.name, r.builtin) for r in routes] == [
        ("apps.by-class-name.rule0.path0", "unavailable"),
        ("apps.legacy-ours.rule0.path0", None),
    ]
    assert routes[0].upstreams == [] and routes[0].plugins == {}
    (problem,) = problems
    assert problem.source == "ingress/apps/by-class-name"
    assert f"commons-router.io/{annotation}" in problem.message
    assert fragment in problem.message, problem.message


def test_pod_code_version_on_each_endpoint() -> None:
    routes, _ = build_routes(cluster_of("shop.yaml"), SELECTION)
    by_url = {e.url: e.version for e in routes[0].upstreams}
    assert by_url["http://10.244.1.17:8080"] == {
        "repository": "https://github.com/example/shop",
        "commit": "3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39",
        "version": "1.4.2",
        # The container that serves the port, not the sidecar listed first in the status.
        "image": "ghcr.io/example/shop:1.4.2",
        "image_digest": SHOP_DIGEST,
        "namespace": "shop",
        "pod": "shop-7c9d8f6b5-abcde",
        "node": "node-a",
    }
    assert by_url["http://10.244.3.9:8080"] == {
        "repository": "https://github.com/example/shop",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "image": "ghcr.io/example/shop:latest",
        "image_digest": "sha256:" + "ab" * 32,
        "namespace": "shop",
        "pod": "shop-7c9d8f6b5-klmno",
        "node": "node-c",
    }


def test_pod_without_version_information_is_unknown() -> None:
    cluster = cluster_of("classes.yaml")
    # No Pod object for web-0 is known at all.
    (route, _), _ = build_routes(cluster, SELECTION)
    assert route.upstreams[0].version == {"code": "unknown", "namespace": "apps", "pod": "web-0"}
    # A pod that states nothing and whose image has no resolved digest yet: unknown too.
    cluster.pods = {
        "apps/web-0": pod_info(
            {
                "metadata": {"name": "web-0", "namespace": "apps"},
                "spec": {"nodeName": "n1", "containers": [{"name": "web", "image": "web:1"}]},
                "status": {"phase": "Pending"},
            }
        )
    }
    (route, _), _ = build_routes(cluster, SELECTION)
    assert route.upstreams[0].version == {
        "code": "unknown",
        "image": "web:1",
        "namespace": "apps",
        "pod": "web-0",
        "node": "n1",
    }


def test_older_ingress_wins_a_conflict_by_order() -> None:
    cluster = cluster_of("classes.yaml")
    younger = dict(cluster.ingresses["apps/by-class-name"])
    younger["metadata"] = {
        **younger["metadata"],
        "name": "aaa-younger",
        "creationTimestamp": "2026-02-01T00:00:00Z",
    }
    cluster.ingresses = {**cluster.ingresses, "apps/aaa-younger": younger}
    routes, _ = build_routes(cluster, SELECTION)
    names = [r.name for r in routes]
    assert names.index("apps.by-class-name.rule0.path0") < names.index(
        "apps.aaa-younger.rule0.path0"
    )


def test_long_names_are_shortened_uniquely() -> None:
    cluster = cluster_of("classes.yaml")
    ingress = dict(cluster.ingresses["apps/by-class-name"])
    long_name = "x" * 200
    ingress["metadata"] = {**ingress["metadata"], "name": long_name}
    cluster.ingresses = {f"apps/{long_name}": ingress}
    (route,), problems = build_routes(cluster, SELECTION)
    assert problems == ()
    assert len(route.name) <= 128


def test_builder_reuses_unchanged_ingresses_and_follows_changes() -> None:
    cluster = cluster_of("shop.yaml", "classes.yaml")
    builder = RouteBuilder(SELECTION)
    first, _ = builder.build(cluster)
    second, _ = builder.build(cluster)
    assert all(a is b for a, b in zip(first, second, strict=True))
    # An endpoint of the shop Service stops serving: only the shop routes are rebuilt.
    slice_key = "shop/shop-q4m7z"
    changed = dict(cluster.slices[slice_key])
    changed["metadata"] = {**changed["metadata"], "resourceVersion": "9999"}
    changed["endpoints"] = [
        {**changed["endpoints"][0], "conditions": {"ready": False, "terminating": True}}
    ]
    cluster.slices = {**cluster.slices, slice_key: changed}
    third, _ = builder.build(cluster)
    assert [e.url for e in third[0].upstreams] == ["http://10.244.1.17:8080"]
    web = [r for r in third if r.name.startswith("apps.")]
    assert all(r is next(s for s in first if s.name == r.name) for r in web)
    assert third == build_routes(cluster, SELECTION)[0]


def _step(rng: random.Random, cluster: Cluster, step: int) -> set[tuple[str, str]]:
    """One random change to ``cluster``, as a watch event would make it; its change set."""
    version = str(100000 + step)

    def bump(obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = version
        return obj

    kind = rng.choice(["slice", "slice", "slice", "pod", "pod", "service", "ingress", "class"])
    if kind == "slice" and cluster.slices:
        slice_key = rng.choice(sorted(cluster.slices))
        slices = dict(cluster.slices)
        action = rng.random()
        if action < 0.15:
            del slices[slice_key]
        else:
            changed = bump(dict(slices[slice_key]))
            for entry in changed.get("endpoints", []):
                if rng.random() < 0.5:
                    entry["conditions"] = {
                        "ready": rng.random() < 0.7,
                        "terminating": rng.random() < 0.3,
                    }
            if action > 0.9:
                changed["metadata"]["labels"] = {
                    SERVICE_NAME_LABEL: rng.choice(["web", "shop", "docs", "nope"])
                }
            slices[slice_key] = changed
        cluster.slices = slices
        return {("endpointslices", slice_key)}
    if kind == "pod" and cluster.pods:
        pod_key = rng.choice(sorted(cluster.pods))
        pods = dict(cluster.pods)
        if rng.random() < 0.2:
            del pods[pod_key]
        else:
            pod = pods[pod_key]
            pods[pod_key] = dataclasses.replace(
                pod, stated=(("commit", f"{step:040x}"),) if rng.random() < 0.7 else ()
            )
        cluster.pods = pods
        return {("pods", pod_key)}
    if kind == "service" and cluster.services:
        service_key = rng.choice(sorted(cluster.services))
        services = dict(cluster.services)
        if rng.random() < 0.2:
            del services[service_key]
        else:
            changed = bump(dict(services[service_key]))
            for port in changed["spec"].get("ports", []):
                if rng.random() < 0.3:
                    port["port"] = rng.choice([80, 81, 443, 9090])
            services[service_key] = changed
        cluster.services = services
        return {("services", service_key)}
    if kind == "ingress" and cluster.ingresses:
        ingress_key = rng.choice(sorted(cluster.ingresses))
        ingresses = dict(cluster.ingresses)
        if rng.random() < 0.2:
            del ingresses[ingress_key]
        else:
            changed = bump(dict(ingresses[ingress_key]))
            for rule in changed["spec"].get("rules", []):
                if rng.random() < 0.5:
                    rule["host"] = rng.choice(["a.example.com", "x.example.com", "*.w.example"])
            ingresses[ingress_key] = changed
        cluster.ingresses = ingresses
        return {("ingresses", ingress_key)}
    classes = dict(cluster.ingress_classes)
    default = load_objects("default-class.yaml")[0]
    if "commons-router" in classes and classes["commons-router"].get("metadata", {}).get(
        "annotations"
    ):
        del classes["commons-router"]
    else:
        classes["commons-router"] = bump(default)
    cluster.ingress_classes = classes
    return {("ingressclasses", "commons-router")}


@pytest.mark.parametrize("shared_hosts", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_incremental_builds_equal_builds_from_scratch(seed: int, shared_hosts: bool) -> None:
    rng = random.Random(seed)
    cluster = cluster_of("shop.yaml", "classes.yaml", "problems.yaml", "edge-cases.yaml")
    builder = RouteBuilder(SELECTION, shared_hosts=shared_hosts, host_release_delay=5)
    # The oracle builds from scratch each time, with the same memory of host owners.
    ownership = HostOwnership(5)
    builder.build(cluster, None, 0)
    build_routes(cluster, SELECTION, shared_hosts=shared_hosts, ownership=ownership, now=0)
    for step in range(150):
        changes = _step(rng, cluster, step)
        if rng.random() < 0.3:  # several changes in one build, as the coalescing makes
            changes |= _step(rng, cluster, 1000 + step)
        expected = build_routes(
            cluster, SELECTION, shared_hosts=shared_hosts, ownership=ownership, now=step
        )
        assert builder.build(cluster, changes, step) == expected, step


def test_kept_objects_lose_managed_fields_and_last_applied_copy() -> None:
    (ingress,) = [o for o in load_objects("shop.yaml") if o["kind"] == "Ingress"]
    ingress["metadata"]["managedFields"] = [
        {"manager": "kubectl-client-side-apply", "operation": "Update", "fieldsV1": {}}
    ]
    ingress["metadata"]["annotations"][LAST_APPLIED] = json.dumps(ingress)
    kept = slim(ingress)
    assert "managedFields" not in kept["metadata"]
    assert LAST_APPLIED not in kept["metadata"]["annotations"]
    assert kept["metadata"]["annotations"]["commons-router.io/retries"] == "2"
    assert kept["spec"] == ingress["spec"]
    assert "managedFields" in ingress["metadata"]  # the original is not modified
    plain = {"metadata": {"name": "x"}}
    assert slim(plain) is plain


def _shop_and_intruder() -> tuple[Cluster, dict[str, Any], dict[str, Any]]:
    """The shop, and an older Ingress of another namespace routing /checkout of its host
    to a working backend of its own (so only the host rule stands in its way)."""
    cluster = cluster_of("shop.yaml")
    (shop,) = cluster.ingresses.values()
    intruder = copy.deepcopy(dict(shop))
    intruder["metadata"].update(
        namespace="other-team",
        name="grab",
        creationTimestamp="2020-01-01T00:00:00Z",
        resourceVersion="77",
    )
    intruder["spec"]["rules"][0]["http"]["paths"] = [
        {
            "path": "/checkout",
            "pathType": "Prefix",
            "backend": {"service": {"name": "shop", "port": {"number": 80}}},
        }
    ]
    cluster.services = {
        **cluster.services,
        "other-team/shop": {
            **cluster.services["shop/shop"],
            "metadata": {"name": "shop", "namespace": "other-team", "resourceVersion": "1"},
        },
    }
    slices = {}
    for slice_key, endpoint_slice in cluster.slices.items():
        moved = copy.deepcopy(dict(endpoint_slice))
        moved["metadata"]["namespace"] = "other-team"
        slices["other-team/" + slice_key.split("/")[1]] = moved
    cluster.slices = {**cluster.slices, **slices}
    return cluster, dict(shop), intruder


SHOP_ROUTES = ["shop.shop.rule0.path0", "shop.shop.rule0.path1"]


def test_a_host_belongs_to_the_namespace_that_routed_it_first() -> None:
    cluster, _, intruder = _shop_and_intruder()
    builder = RouteBuilder(SELECTION)
    builder.build(cluster, None, 0)
    cluster.ingresses = {**cluster.ingresses, "other-team/grab": intruder}
    routes, problems = builder.build(cluster, {("ingresses", "other-team/grab")}, 1)
    assert [r.name for r in routes] == SHOP_ROUTES
    assert all(r.upstreams for r in routes)
    (problem,) = problems
    assert problem.source == "ingress/other-team/grab"
    assert problem.route == "other-team.grab.rule0.path0"
    assert "host shop.example.com belongs to namespace 'shop'" in problem.message

    routes, problems = build_routes(cluster, SELECTION, shared_hosts=True)
    assert "other-team.grab.rule0.path0" in [r.name for r in routes]
    assert problems == ()


def test_a_redeploy_never_hands_the_host_to_another_namespace() -> None:
    cluster, shop, intruder = _shop_and_intruder()
    builder = RouteBuilder(SELECTION, host_release_delay=300)
    builder.build(cluster, None, 0)
    cluster.ingresses = {"shop/shop": shop, "other-team/grab": intruder}
    builder.build(cluster, {("ingresses", "other-team/grab")}, 5)
    # The shop is redeployed: its Ingress is deleted, then created again (younger now
    # than the intruder's).
    cluster.ingresses = {"other-team/grab": intruder}
    routes, problems = builder.build(cluster, {("ingresses", "shop/shop")}, 10)
    assert routes == ()
    assert "belongs to namespace 'shop', which stopped routing it" in problems[0].message
    again = copy.deepcopy(shop)
    again["metadata"].update(creationTimestamp="2026-06-01T00:00:00Z", resourceVersion="900")
    cluster.ingresses = {"other-team/grab": intruder, "shop/shop": again}
    routes, problems = builder.build(cluster, {("ingresses", "shop/shop")}, 20)
    assert [r.name for r in routes] == SHOP_ROUTES
    assert all(r.upstreams for r in routes)
    assert [p.route for p in problems] == ["other-team.grab.rule0.path0"]
    # Left alone longer than the hold, the host goes to the namespace that routes it.
    cluster.ingresses = {"other-team/grab": intruder}
    builder.build(cluster, {("ingresses", "shop/shop")}, 30)
    assert builder.next_release() == 330
    routes, problems = builder.build(cluster, set(), 331)
    assert [r.name for r in routes] == ["other-team.grab.rule0.path0"]
    assert problems == ()


def test_a_host_routed_by_two_namespaces_with_no_known_owner_answers_503() -> None:
    # As after a router restart: nothing tells which namespace had the host first.
    cluster, shop, intruder = _shop_and_intruder()
    cluster.ingresses = {"shop/shop": shop, "other-team/grab": intruder}
    for routes, problems in (
        build_routes(cluster, SELECTION),
        RouteBuilder(SELECTION).build(cluster, None, 0),
    ):
        assert sorted(r.name for r in routes) == sorted(
            [*SHOP_ROUTES, "other-team.grab.rule0.path0"]
        )
        assert all(r.builtin == "unavailable" and not r.upstreams for r in routes)
        assert len(problems) == 3
        assert all(
            "host shop.example.com is routed by Ingresses in namespaces other-team, shop"
            in p.message
            and "owner is unclear" in p.message
            for p in problems
        )
