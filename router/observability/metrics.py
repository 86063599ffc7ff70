"""Prometheus metrics, kept as plain counters: one dict lookup and a bisect per request."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NO_ROUTE = "(none)"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class RouteMetrics:
    __slots__ = ("buckets", "count", "name", "statuses", "sum", "upstream_errors")

    def __init__(self, name: str) -> None:
        self.name = name
        self.statuses: dict[int, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0
        self.upstream_errors: dict[str, int] = {}

    def observe(self, status: int, seconds: float) -> None:
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + 1


class Metrics:
    """All counters of one process, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._routes: dict[str, RouteMetrics] = {}
        self.unmatched = self.route(NO_ROUTE)
        self.in_flight = 0
        self.table_generation = 0
        self.reloads: dict[str, int] = {"ok": 0, "failed": 0}
        self.ejections = 0
        self.plugin_errors: dict[str, int] = {}
        self.collectors: list[Callable[[], Iterable[str]]] = []
        """More metric families (lines with HELP and TYPE), rendered after the core ones."""
        self.rejections: dict[str, int] = {}

    def rejected(self, reason: str) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    def route(self, name: str) -> RouteMetrics:
        metrics = self._routes.get(name)
        if metrics is None:
            metrics = self._routes[name] = RouteMetrics(name)
        return metrics

    def plugin_error(self, plugin: str) -> None:
        self.plugin_errors[plugin] = self.plugin_errors.get(plugin, 0) + 1

    def render(self) -> str:
        return "".join(self._lines())

    def _lines(self) -> Iterator[str]:
        routes = sorted(self._routes.values(), key=lambda m: m.name)
        yield "# HELP commons_router_requests_total Requests answered, by route and status.\n"
        yield "# TYPE commons_router_requests_total counter\n"
        for m in routes:
            for status, count in sorted(m.statuses.items()):
                yield (
                    f'commons_router_requests_total{{route="{_escape(m.name)}",'
                    f'status="{status}"}} {count}\n'
                )
        yield "# HELP commons_router_request_duration_seconds Time to answer, by route.\n"
        yield "# TYPE commons_router_request_duration_seconds histogram\n"
        for m in routes:
            if not m.count:
                continue
            label = f'route="{_escape(m.name)}"'
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS, m.buckets, strict=False):
                cumulative += count
                yield (
                    f'commons_router_request_duration_seconds_bucket{{{label},le="{bound}"}} '
                    f"{cumulative}\n"
                )
            yield f'commons_router_request_duration_seconds_bucket{{{label},le="+Inf"}} {m.count}\n'
            yield f"commons_router_request_duration_seconds_sum{{{label}}} {m.sum}\n"
            yield f"commons_router_request_duration_seconds_count{{{label}}} {m.count}\n"
        yield "# HELP commons_router_upstream_errors_total Failed upstream attempts, by kind.\n"
        yield "# TYPE commons_router_upstream_errors_total counter\n"
        for m in routes:
            for kind, count in sorted(m.upstream_errors.items()):
                yield (
                    f'commons_router_upstream_errors_total{{route="{_escape(m.name)}",'
                    f'kind="{kind}"}} {count}\n'
                )
        yield "# HELP commons_router_plugin_errors_total Exceptions raised by plugins.\n"
        yield "# TYPE commons_router_plugin_errors_total counter\n"
        for plugin, count in sorted(self.plugin_errors.items()):
            yield f'commons_router_plugin_errors_total{{plugin="{_escape(plugin)}"}} {count}\n'
        yield (
            "# HELP commons_router_rejected_requests_total Requests refused before they "
            "could be handled (unparsable head, framing, head timeout), by reason.\n"
        )
        yield "# TYPE commons_router_rejected_requests_total counter\n"
        for reason, count in sorted(self.rejections.items()):
            yield f'commons_router_rejected_requests_total{{reason="{reason}"}} {count}\n'
        yield "# HELP commons_router_in_flight_requests Requests being answered now.\n"
        yield "# TYPE commons_router_in_flight_requests gauge\n"
        yield f"commons_router_in_flight_requests {self.in_flight}\n"
        yield (
            "# HELP commons_router_endpoint_ejections_total Endpoints ejected by passive health.\n"
        )
        yield "# TYPE commons_router_endpoint_ejections_total counter\n"
        yield f"commons_router_endpoint_ejections_total {self.ejections}\n"
        yield "# HELP commons_router_route_table_generation Route tables applied so far.\n"
        yield "# TYPE commons_router_route_table_generation gauge\n"
        yield f"commons_router_route_table_generation {self.table_generation}\n"
        yield "# HELP commons_router_config_reloads_total Route reloads, by result.\n"
        yield "# TYPE commons_router_config_reloads_total counter\n"
        for result, count in sorted(self.reloads.items()):
            yield f'commons_router_config_reloads_total{{result="{result}"}} {count}\n'
        for collect in self.collectors:
            yield from collect()
