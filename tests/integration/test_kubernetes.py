"""The kubernetes provider against the test API server, with real backends and a real router."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from router.testing import run_router
from router_plugins.kubernetes import KubernetesPlugin
from tests.support.kubeapi import KubeApiServer
from tests.support.kubecluster import (
    POD_IPS,
    KubeCluster,
    endpoint,
    eventually,
    plugin_config,
    run_cluster,
    set_endpoints,
)

ROUTE = "team-a.app.rule0.path0"


def url(cluster: KubeCluster, pod: str) -> str:
    return f"http://{POD_IPS[pod]}:{cluster.pods.port}"


async def test_routes_are_applied_before_the_router_reports_ready(tmp_path: Path) -> None:
    async with run_cluster(tmp_path, "app-0") as cluster:
        # No waiting: the start-up already synced the cluster and applied its routes.
        async with cluster.client.get(cluster.router.admin_url + "/readyz") as response:
            assert response.status == 200
        assert await cluster.endpoint_urls(ROUTE) == [url(cluster, "app-0")]
        assert (await cluster.get("/"))[0] == 200


async def test_routes_appear_change_and_disappear(tmp_path: Path) -> None:
    async with run_cluster(tmp_path, "app-0") as cluster:
        status, body = await cluster.get("/")
        assert (status, body["pod"]) == (200, "app-0")

        # A second path on a new Ingress appears.
        ingress = cluster.api.get("Ingress", "team-a", "app")
        ingress["metadata"]["name"] = "api"
        ingress["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/api"
        ingress["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = "Exact"
        del ingress["metadata"]["resourceVersion"], ingress["metadata"]["uid"]
        cluster.api.apply(ingress)

        async def api_route() -> bool:
            return await cluster.endpoint_urls("team-a.api.rule0.path0") is not None

        await eventually(api_route, "the new Ingress is routed")

        # The endpoint changes: requests follow.
        set_endpoints(cluster.api, [endpoint("app-1")])

        async def moved() -> bool:
            return (await cluster.get("/"))[1]["pod"] == "app-1"

        await eventually(moved, "requests go to the new endpoint")

        # The host changes: the old host is gone.
        ingress = cluster.api.get("Ingress", "team-a", "app")
        ingress["spec"]["rules"][0]["host"] = "app2.test"
        cluster.api.apply(ingress)

        async def rehosted() -> bool:
            return (await cluster.get("/", host="app2.test"))[0] == 200

        await eventually(rehosted, "the new host is routed")
        assert (await cluster.get("/", host="app.test"))[0] == 404

        # Deleted: the route disappears.
        cluster.api.delete("Ingress", "team-a", "app")

        async def gone() -> bool:
            return (await cluster.get("/", host="app2.test"))[0] == 404

        await eventually(gone, "the deleted Ingress is no longer routed")


async def test_bad_annotation_disables_only_that_ingress_and_shows_in_routes(
    tmp_path: Path,
) -> None:
    async with run_cluster(tmp_path, "app-0") as cluster:
        ingress = cluster.api.get("Ingress", "team-a", "app")
        ingress["metadata"]["name"] = "broken"
        ingress["metadata"]["annotations"] = {"commons-router.io/timeout": "forever"}
        ingress["spec"]["rules"][0]["host"] = "broken.test"
        del ingress["metadata"]["resourceVersion"], ingress["metadata"]["uid"]
        cluster.api.apply(ingress)

        async def problem_shown() -> bool:
            return any(
                p["source"] == "ingress/team-a/broken" for p in (await cluster.routes())["problems"]
            )

        await eventually(problem_shown, "the problem shows in /routes")
        (problem,) = [
            p
            for p in (await cluster.routes())["problems"]
            if p["source"] == "ingress/team-a/broken"
        ]
        assert "commons-router.io/timeout" in problem["message"]
        assert "invalid duration" in problem["message"]
        status, body = await cluster.get("/", host="broken.test")
        assert status == 503
        assert "team-a.broken.rule0.path0" in str(body)
        assert (await cluster.get("/"))[0] == 200


async def test_410_inside_the_stream_relists_without_losing_a_route(tmp_path: Path) -> None:
    async with run_cluster(tmp_path, "app-0") as cluster:
        api = cluster.api
        lists_before = len(api.calls_of("list"))
        statuses: list[int] = []
        stop = asyncio.Event()

        async def keep_requesting() -> None:
            while not stop.is_set():
                statuses.append((await cluster.get("/"))[0])

        requester = asyncio.create_task(keep_requesting())
        # While the history is compacted, an endpoint is added: the relist must see it.
        api.compact()
        set_endpoints(api, [endpoint("app-0"), endpoint("app-1")])

        async def both() -> bool:
            return await cluster.endpoint_urls(ROUTE) == [
                url(cluster, "app-0"),
                url(cluster, "app-1"),
            ]

        await eventually(both, "the change made around the 410 is applied")
        relisted = {c.resource for c in api.calls_of("list")[lists_before:]}
        assert relisted == {"ingresses", "ingressclasses", "services", "endpointslices", "pods"}
        # Watches resume from the new list's version, never from the stale one.
        watches_after = [c for c in api.calls_of("watch") if int(c.params["resourceVersion"]) > 0]
        assert all(int(c.params["resourceVersion"]) >= api.compacted for c in watches_after[-5:])

        # The watch works again: a later change arrives.
        set_endpoints(api, [endpoint("app-1")])

        async def one() -> bool:
            return await cluster.endpoint_urls(ROUTE) == [url(cluster, "app-1")]

        await eventually(one, "a change after the relist is applied")
        stop.set()
        await requester
        assert statuses and set(statuses) == {200}


async def test_410_response_relists(tmp_path: Path) -> None:
    async with run_cluster(tmp_path, "app-0") as cluster:
        api = cluster.api
        api.expire_as_response = True
        lists_before = len(api.calls_of("list"))
        api.compact(notify=False)
        api.drop_watches()
        set_endpoints(api, [endpoint("app-2")])

        async def moved() -> bool:
            return await cluster.endpoint_urls(ROUTE) == [url(cluster, "app-2")]

        await eventually(moved, "the change is seen after a 410 answer")
        assert len(api.calls_of("list")) >= lists_before + 5


async def test_dropped_watch_resumes_from_the_last_version(tmp_path: Path) -> None:
    async with run_cluster(tmp_path, "app-0") as cluster:
        api = cluster.api
        api.bookmark()
        lists_before = len(api.calls_of("list"))
        watches_before = len(api.calls_of("watch"))
        bookmark_version = api.revision
        api.drop_watches()
        set_endpoints(api, [endpoint("app-1")])

        async def moved() -> bool:
            return await cluster.endpoint_urls(ROUTE) == [url(cluster, "app-1")]

        await eventually(moved, "the change made while disconnected arrives")
        # Reconnected watches, no relist; they resumed from the bookmark's version.
        assert len(api.calls_of("list")) == lists_before
        resumed = api.calls_of("watch")[watches_before:]
        assert len(resumed) >= 5
        assert {c.params["resourceVersion"] for c in resumed[:5]} == {str(bookmark_version)}
        assert all(c.params["allowWatchBookmarks"] == "true" for c in resumed)


async def test_terminating_endpoint_finishes_in_flight_and_gets_no_new_requests(
    tmp_path: Path,
) -> None:
    async with run_cluster(tmp_path, "app-0") as cluster:
        held = asyncio.create_task(cluster.get("/hold"))

        async def holding() -> bool:
            return cluster.pods.held.get("app-0") == 1

        await eventually(holding, "a request is in flight on app-0")
        set_endpoints(cluster.api, [endpoint("app-0", terminating=True), endpoint("app-1")])

        async def switched() -> bool:
            return await cluster.endpoint_urls(ROUTE) == [url(cluster, "app-1")]

        await eventually(switched, "the terminating endpoint leaves the route")
        for _ in range(10):
            status, body = await cluster.get("/")
            assert (status, body["pod"]) == (200, "app-1")
        cluster.pods.release.setdefault("app-0", asyncio.Event()).set()
        status, body = await held
        assert (status, body) == (200, {"pod": "app-0", "held": True})


async def test_endpoint_churn_never_causes_a_router_error(tmp_path: Path) -> None:
    async with run_cluster(tmp_path, "app-0", "app-1", "app-2") as cluster:
        pods = list(POD_IPS)
        results: list[tuple[int, Any]] = []
        stop = asyncio.Event()

        async def keep_requesting() -> None:
            while not stop.is_set():
                results.append(await cluster.get("/"))

        requesters = [asyncio.create_task(keep_requesting()) for _ in range(4)]
        generation = (await cluster.routes())["generation"]
        for step in range(30):
            # Always one endpoint serving; the others come and go or are terminating.
            keep = pods[step % 3]
            endpoints = [endpoint(keep)]
            endpoints += [
                endpoint(pod, terminating=(step + i) % 2 == 0)
                for i, pod in enumerate(pods)
                if pod != keep and (step + i) % 3 != 0
            ]
            set_endpoints(cluster.api, endpoints)
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*requesters)
        assert (await cluster.routes())["generation"] > generation + 5
        assert len(results) > 50
        assert {status for status, _ in results} == {200}
        assert {body["pod"] for _, body in results} == set(pods)


async def test_access_log_shows_the_code_version_of_the_pod(tmp_path: Path) -> None:
    async with run_cluster(tmp_path, "app-1", "app-2") as cluster:
        seen = set()
        for _ in range(6):
            seen.add((await cluster.get("/versioned"))[1]["pod"])
        assert seen == {"app-1", "app-2"}
        lines = [e for e in await cluster.router.access_log() if e["path"] == "/versioned"]
        versions = {line["upstream"]: line["code_version"] for line in lines}
        assert versions[url(cluster, "app-1")] == {
            "repository": "https://github.com/example/app",
            "commit": "2" * 40,
            "version": "2.0.2",
            "image": "ghcr.io/example/app:2.0.2",
            "image_digest": "sha256:" + "2" * 64,
            "namespace": "team-a",
            "pod": "app-1",
            "node": "node-2",
        }
        assert versions[url(cluster, "app-2")] == {
            "code": "unknown",
            "image": "ghcr.io/example/app:2.0.2",
            "namespace": "team-a",
            "pod": "app-2",
            "node": "node-3",
        }


async def test_paged_lists_and_namespaces(tmp_path: Path) -> None:
    async with run_cluster(tmp_path, "app-0", page_size=1, namespaces=["team-a"]) as cluster:
        assert (await cluster.get("/"))[0] == 200
        pod_lists = [c for c in cluster.api.calls_of("list") if c.resource == "pods"]
        assert len(pod_lists) == 3  # three pods, one per page
        assert "continue" not in pod_lists[0].params
        assert all("continue" in c.params and c.params["limit"] == "1" for c in pod_lists[1:])
        assert {c.namespace for c in cluster.api.calls if c.resource != "ingressclasses"} == {
            "team-a"
        }


async def test_clusterrole_covers_every_call_the_provider_made(tmp_path: Path) -> None:
    role_path = Path(__file__).resolve().parents[2] / "config" / "kubernetes" / "clusterrole.yaml"
    role = yaml.safe_load(role_path.read_text())
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    async with run_cluster(tmp_path, "app-0") as cluster:
        cluster.api.compact()  # relists and new watches too

        async def relisted() -> bool:
            return len(cluster.api.calls_of("list")) >= 10

        await eventually(relisted, "the provider relisted")
        made = {(c.group, c.resource, c.verb) for c in cluster.api.calls}
    assert {verb for _, _, verb in made} == {"list", "watch"}
    assert len(made) == 10
    # Everything granted is used (the status write when status is on:
    # test_kubernetes_status.py; TLS Secrets with a TLS listener: test_kubernetes_tls.py;
    # the Gateway API when enabled: test_gateway_api.py).
    assert made == {
        grant
        for grant in granted
        if grant[1] not in ("ingresses/status", "secrets", "namespaces", "routerpolicies")
        and grant[0] != "gateway.networking.k8s.io"
    }


async def test_broken_watch_data_and_server_errors_keep_the_last_routes(tmp_path: Path) -> None:
    async with run_cluster(
        tmp_path, "app-0", pod_label_selector="app.kubernetes.io/name=app"
    ) as cluster:
        api = cluster.api
        lists_before = len(api.calls_of("list"))
        api.send_raw(b"{this is not json\n")

        async def rewatched() -> bool:
            return len(api.calls_of("watch")) >= 10

        await eventually(rewatched, "the watches reconnect after broken data")
        assert (await cluster.get("/"))[0] == 200
        api.send_error(500, "InternalError", "etcdserver: leader changed")
        set_endpoints(api, [endpoint("app-2")])

        async def moved() -> bool:
            return await cluster.endpoint_urls(ROUTE) == [url(cluster, "app-2")]

        await eventually(moved, "changes arrive after the errors")
        # Errors other than 410 resume the watch; they never relist.
        assert len(api.calls_of("list")) == lists_before
        pod_calls = [c for c in api.calls if c.resource == "pods"]
        assert {c.params["labelSelector"] for c in pod_calls} == {"app.kubernetes.io/name=app"}


async def test_a_service_without_endpoints_answers_503_and_never_falls_through(
    tmp_path: Path,
) -> None:
    async with run_cluster(tmp_path, "app-0") as cluster:
        api = cluster.api
        # Another team routes every *.test host to its own pod.
        for kind, name in [("Service", "app"), ("EndpointSlice", "app-k8s7d")]:
            obj = api.get(kind, "team-a", name)
            obj["metadata"] = {**obj["metadata"], "namespace": "team-b"}
            del obj["metadata"]["resourceVersion"], obj["metadata"]["uid"]
            if kind == "EndpointSlice":
                obj["endpoints"] = [endpoint("app-2")]
                obj["endpoints"][0]["targetRef"]["namespace"] = "team-b"
            api.apply(obj)
        catch_all = api.get("Ingress", "team-a", "app")
        catch_all["metadata"] = {"name": "catch-all", "namespace": "team-b"}
        catch_all["spec"]["rules"][0]["host"] = "*.test"
        api.apply(catch_all)

        async def other_host_routed() -> bool:
            return (await cluster.get("/", host="other.test"))[1] == {"pod": "app-2", "path": "/"}

        await eventually(other_host_routed, "the wildcard route is applied")
        set_endpoints(api, [endpoint("app-0", terminating=True)])

        async def unavailable() -> bool:
            return (await cluster.get("/"))[0] == 503

        await eventually(unavailable, "the route without endpoints answers 503")
        for _ in range(5):
            status, body = await cluster.get("/")
            assert status == 503, body
        (problem,) = [p for p in (await cluster.routes())["problems"] if p["route"] == ROUTE]
        assert "service team-a/app has no serving endpoints" in problem["message"]


async def test_plugin_settings_the_router_rejects_make_the_route_answer_503(
    tmp_path: Path,
) -> None:
    async with run_cluster(tmp_path, "app-0") as cluster:
        ingress = cluster.api.get("Ingress", "team-a", "app")
        ingress["metadata"]["annotations"] = {"commons-router.io/plugin.no-such-plugin": "{}"}
        cluster.api.apply(ingress)

        async def unavailable() -> bool:
            return (await cluster.get("/"))[0] == 503

        await eventually(unavailable, "the route answers 503")
        (problem,) = [p for p in (await cluster.routes())["problems"] if p["route"] == ROUTE]
        assert "plugin 'no-such-plugin' is not enabled" in problem["message"]
        assert problem["message"].endswith("the route answers 503")


def intrude(api: KubeApiServer) -> None:
    """team-b, with an Ingress older than team-a's, routes /checkout of app.test to its
    own pod (app-2)."""
    for kind, name in [("Service", "app"), ("EndpointSlice", "app-k8s7d")]:
        obj = api.get(kind, "team-a", name)
        obj["metadata"] = {**obj["metadata"], "namespace": "team-b"}
        del obj["metadata"]["resourceVersion"], obj["metadata"]["uid"]
        if kind == "EndpointSlice":
            obj["endpoints"] = [endpoint("app-2")]
            obj["endpoints"][0]["targetRef"]["namespace"] = "team-b"
        api.apply(obj)
    grab = api.get("Ingress", "team-a", "app")
    grab["metadata"] = {
        "name": "grab",
        "namespace": "team-b",
        "creationTimestamp": "2025-01-01T00:00:00Z",
    }
    grab["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/checkout"
    api.apply(grab)


async def test_a_redeploy_never_hands_a_host_to_another_namespace(tmp_path: Path) -> None:
    async with run_cluster(tmp_path, "app-0") as cluster:
        api = cluster.api
        intrude(api)

        async def refused() -> bool:
            problems = (await cluster.routes())["problems"]
            return any(p["route"] == "team-b.grab.rule0.path0" for p in problems)

        await eventually(refused, "team-b's route is refused")
        assert (await cluster.get("/checkout"))[1]["pod"] == "app-0"
        # team-a redeploys: its Ingress is deleted and created again, now younger.
        ingress = api.get("Ingress", "team-a", "app")
        api.delete("Ingress", "team-a", "app")

        async def gone() -> bool:
            return await cluster.endpoint_urls(ROUTE) is None

        await eventually(gone, "team-a's route is gone")
        # Meanwhile the host is still team-a's: team-b's route stays disabled.
        assert (await cluster.get("/checkout"))[0] == 404
        ingress["metadata"] = {
            "name": "app",
            "namespace": "team-a",
            "creationTimestamp": "2026-06-01T00:00:00Z",
        }
        api.apply(ingress)

        async def back() -> bool:
            return await cluster.endpoint_urls(ROUTE) == [url(cluster, "app-0")]

        await eventually(back, "team-a's route is back")
        for path in ("/", "/checkout", "/api"):
            status, body = await cluster.get(path)
            assert (status, body["pod"]) == (200, "app-0"), path
        (problem,) = [
            p
            for p in (await cluster.routes())["problems"]
            if p["route"] == "team-b.grab.rule0.path0"
        ]
        assert "host app.test belongs to namespace 'team-a'" in problem["message"]

        # A router started now cannot know who had the host first: all of it answers 503.
        config = {
            "plugins": [{"name": "kubernetes", "config": plugin_config(tmp_path / "kubeconfig")}]
        }
        async with run_router(config, plugins={"kubernetes": KubernetesPlugin}) as fresh:
            for path in ("/", "/checkout"):
                async with cluster.client.get(fresh.url + path, headers={"Host": "app.test"}) as r:
                    assert r.status == 503, path
            async with cluster.client.get(fresh.admin_url + "/routes") as response:
                problems = (await response.json())["problems"]
            unclear = [p for p in problems if "owner is unclear" in p["message"]]
            assert {p["route"] for p in unclear} == {ROUTE, "team-b.grab.rule0.path0"}
            assert all("namespaces team-a, team-b" in p["message"] for p in unclear)
