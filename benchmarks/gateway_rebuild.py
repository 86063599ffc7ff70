"""Gateway API benchmark: route-table rebuild time for 1,000 HTTPRoutes against the same
routes as 1,000 Ingresses, in the same run.

    .venv/bin/python benchmarks/gateway_rebuild.py [--routes 1000] [--rounds 5]

The cluster is kubernetes_rebuild.py's (1,000 apps, 5,000 endpoints with pod code
versions); each Ingress becomes an HTTPRoute with the same host, path and Service,
attached to one Gateway. Each round builds every route anew (objects -> routes ->
compiled table: a fresh builder for the Ingresses, a fresh translator for the
HTTPRoutes), then rebuilds after one EndpointSlice change (the Ingress builder re-maps the
Ingresses concerned; the translation runs over every HTTPRoute but gives the unchanged
routes back as the same objects, so only the changed one is validated and compiled).
Prints the medians and the ratios; target: HTTPRoutes within 2x of Ingresses (full).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.kubernetes_rebuild import (  # noqa: E402
    SELECTION,
    cluster_of,
    compiler,
    synthetic_objects,
    timed,
)
from router.proxy.upstream import EndpointRegistry  # noqa: E402
from router_plugins.kubernetes.builder import RouteBuilder  # noqa: E402
from router_plugins.kubernetes.endpoints import index_slices  # noqa: E402
from router_plugins.kubernetes.gateway.translate import (  # noqa: E402
    GatewayInputs,
    RouterListener,
    Translator,
)
from router_plugins.kubernetes.mapping import Cluster  # noqa: E402

CONTROLLER = "commons-router.io/gateway-controller"
TARGET_RATIO = 2.0


def gateway_inputs(cluster: Cluster) -> GatewayInputs:
    routes = {}
    for ingress_key, ingress in cluster.ingresses.items():
        rule = ingress["spec"]["rules"][0]
        path = rule["http"]["paths"][0]
        routes[ingress_key] = {
            "kind": "HTTPRoute",
            "metadata": {**ingress["metadata"], "generation": 1},
            "spec": {
                "parentRefs": [{"name": "gw", "namespace": "infra"}],
                "hostnames": [rule["host"]],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": path["path"]}}],
                        "backendRefs": [{"name": path["backend"]["service"]["name"], "port": 80}],
                    }
                ],
            },
        }
    slices = index_slices(cluster.slices.values())
    # The provider takes these from the builder's slice index, kept up to date per change.
    pod_keys = {
        id(endpoint_slice): tuple(
            f"{e['targetRef']['namespace']}/{e['targetRef']['name']}"
            for e in endpoint_slice["endpoints"]
        )
        for endpoint_slice in cluster.slices.values()
    }
    return GatewayInputs(
        classes={
            "commons": {"metadata": {"name": "commons"}, "spec": {"controllerName": CONTROLLER}}
        },
        gateways={
            "infra/gw": {
                "metadata": {"name": "gw", "namespace": "infra"},
                "spec": {
                    "gatewayClassName": "commons",
                    "listeners": [
                        {
                            "name": "http",
                            "port": 80,
                            "protocol": "HTTP",
                            "allowedRoutes": {"namespaces": {"from": "All"}},
                        }
                    ],
                },
            }
        },
        routes=routes,
        services=cluster.services,
        slices_of=lambda service_key: slices.get(service_key, []),
        pod_keys_of=lambda endpoint_slice: pod_keys[id(endpoint_slice)],
        pods=cluster.pods,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cluster = cluster_of(synthetic_objects(ingresses=args.routes))
    inputs = gateway_inputs(cluster)
    listeners = {80: RouterListener("default", tls=False)}
    endpoints = EndpointRegistry()  # as after start-up: every endpoint's state exists
    changed_key = next(iter(sorted(cluster.slices)))
    changed = cluster.slices[changed_key]

    def change_one_endpoint() -> None:
        # A new object, as the watch delivers it: the first endpoint starts terminating.
        entry = dict(changed["endpoints"][0])
        serving = entry["conditions"]["terminating"]
        entry["conditions"] = {"ready": serving, "serving": serving, "terminating": not serving}
        new = {**changed, "endpoints": [entry, *changed["endpoints"][1:]]}
        cluster.slices[changed_key] = new  # type: ignore[index]
        changed.update(new)

    def ingress_round() -> tuple[float, float]:
        builder, compile_routes = RouteBuilder(SELECTION), compiler(endpoints)
        map_ms, (routes, problems) = timed(builder.build, cluster)
        assert not problems, problems[:3]
        compile_ms, _ = timed(compile_routes, routes)
        change_one_endpoint()
        one_ms, (routes, _) = timed(builder.build, cluster, {("endpointslices", changed_key)})
        one_compile_ms, _ = timed(compile_routes, routes)
        return float(map_ms + compile_ms), float(one_ms + one_compile_ms)

    def gateway_round() -> tuple[float, float]:
        translator, compile_routes = Translator(CONTROLLER, listeners), compiler(endpoints)
        map_ms, result = timed(translator.translate, inputs)
        assert len(result.routes) == args.routes and not result.problems, result.problems[:3]
        compile_ms, _ = timed(compile_routes, tuple(result.routes))
        change_one_endpoint()
        one_ms, result = timed(translator.translate, gateway_inputs(cluster))
        one_compile_ms, _ = timed(compile_routes, tuple(result.routes))
        return float(map_ms + compile_ms), float(one_ms + one_compile_ms)

    ingress_round(), gateway_round()  # warm-up: endpoint states, imports
    ingress, gateway = [], []
    for _ in range(args.rounds):  # alternate, so that load on the machine hits both alike
        ingress.append(ingress_round())
        gateway.append(gateway_round())
    full_i, full_g = (statistics.median(r[0] for r in rounds) for rounds in (ingress, gateway))
    one_i, one_g = (statistics.median(r[1] for r in rounds) for rounds in (ingress, gateway))
    ratio = full_g / full_i
    print(f"{args.routes} routes, {len(cluster.slices)} EndpointSlices (median of {args.rounds}):")
    print(f"  full rebuild  Ingresses: {full_i:8.1f} ms  HTTPRoutes: {full_g:8.1f} ms", end="")
    print(f"  ({ratio:.2f}x; target <= {TARGET_RATIO:g}x)")
    print(f"  one change    Ingresses: {one_i:8.1f} ms  HTTPRoutes: {one_g:8.1f} ms", end="")
    print(f"  ({one_g / one_i:.1f}x)")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
