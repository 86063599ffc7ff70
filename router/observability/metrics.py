"""Prometheus metrics, kept as plain counters: two dict lookups and a bisect per request.

Names and labels follow Prometheus conventions: ``code`` and ``method`` on request
counters, ``_total`` counters, base units (seconds, bytes), ``process_*`` and a
``commons_router_build_info`` series.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from router.buildinfo import build_info
from router.observability.process import process_lines

if TYPE_CHECKING:
    from router.observability.accesslog import AccessLog
    from router.proxy.upstream import EndpointState

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NO_ROUTE = "(none)"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format, as scrapers expect it named."""

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "_OTHER"
"""Label for any other method (as OpenTelemetry does): clients cannot mint new series."""


_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _monotonic() -> float:
    # The event loop's clock, which endpoint ejection deadlines use.
    return time.monotonic()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class RouteMetrics:
    __slots__ = (
        "buckets",
        "bytes_in",
        "bytes_out",
        "codes",
        "count",
        "name",
        "sum",
        "upstream_errors",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.codes: dict[str, dict[int, int]] = {}
        """Method -> status code -> requests."""
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream_errors: dict[str, int] = {}

    def observe(
        self, method: str, status: int, seconds: float, bytes_in: int = 0, bytes_out: int = 0
    ) -> None:
        codes = self.codes.get(method)
        if codes is None:
            if method not in KNOWN_METHODS:
                method = OTHER_METHOD
            codes = self.codes.setdefault(method, {})
        codes[status] = codes.get(status, 0) + 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def errors(self) -> int:
        """Answers with a 5xx status, all methods."""
        return sum(n for codes in self.codes.values() for c, n in codes.items() if c >= 500)

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + 1


class LabeledCounter:
    """A counter a plugin declared (``commons_router_<name>``), by label values."""

    __slots__ = ("help", "labels", "name", "values")

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        if not _NAME_RE.match(name) or not name.endswith("_total"):
            raise ValueError(f"counter name {name!r}: lowercase, digits and '_', ending '_total'")
        self.name = "commons_router_" + name
        self.help = help_text
        self.labels = labels
        self.values: dict[tuple[str, ...], int] = {}

    def inc(self, *label_values: str) -> None:
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}")
        self.values[label_values] = self.values.get(label_values, 0) + 1

    def lines(self) -> Iterator[str]:
        yield f"# HELP {self.name} {self.help}\n# TYPE {self.name} counter\n"
        for values, count in sorted(self.values.items()):
            pairs = ",".join(
                f'{label}="{_escape(value)}"'
                for label, value in zip(self.labels, values, strict=True)
            )
            yield f"{self.name}{{{pairs}}} {count}\n" if pairs else f"{self.name} {count}\n"


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
        self.access_log: AccessLog | None = None
        self.plugin_counters: dict[str, LabeledCounter] = {}
        self.connections: Callable[[], int] | None = None
        """Open client connections on the public listener, counted when asked."""
        self.endpoints: Callable[[], Iterable[EndpointState]] | None = None
        """The endpoints of the current route table."""
        self.last_reload = time.time()
        """When the configuration was last loaded successfully (start-up counts)."""
        self.last_reload_ok = True
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

    def _endpoint_lines(self) -> Iterator[str]:
        if self.endpoints is None:
            return
        endpoints = sorted({e.url: e for e in self.endpoints()}.items())
        yield (
            "# HELP commons_router_endpoint_requests_total "
            "Attempts sent to each upstream endpoint.\n"
        )
        yield "# TYPE commons_router_endpoint_requests_total counter\n"
        for url, endpoint in endpoints:
            yield (
                f'commons_router_endpoint_requests_total{{endpoint="{_escape(url)}"}} '
                f"{endpoint.attempts}\n"
            )
        yield (
            "# HELP commons_router_endpoint_failures_total "
            "Failed attempts on each upstream endpoint.\n"
        )
        yield "# TYPE commons_router_endpoint_failures_total counter\n"
        for url, endpoint in endpoints:
            yield (
                f'commons_router_endpoint_failures_total{{endpoint="{_escape(url)}"}} '
                f"{endpoint.failed_attempts}\n"
            )
        yield "# HELP commons_router_endpoint_healthy 1 unless ejected by passive health.\n"
        yield "# TYPE commons_router_endpoint_healthy gauge\n"
        now = _monotonic()
        for url, endpoint in endpoints:
            healthy = int(endpoint.ejected_until <= now)
            yield f'commons_router_endpoint_healthy{{endpoint="{_escape(url)}"}} {healthy}\n'

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> LabeledCounter:
        """The plugin counter ``commons_router_<name>``, created on first use."""
        counter = self.plugin_counters.get(name)
        if counter is None:
            counter = self.plugin_counters[name] = LabeledCounter(name, help_text, labels)
        return counter

    def plugin_error(self, plugin: str) -> None:
        self.plugin_errors[plugin] = self.plugin_errors.get(plugin, 0) + 1

    def routes(self) -> list[RouteMetrics]:
        return sorted(self._routes.values(), key=lambda m: m.name)

    def render(self) -> str:
        return "".join(self._lines())

    def _lines(self) -> Iterator[str]:
        routes = self.routes()
        info = build_info()
        yield "# HELP commons_router_build_info Version and build commit of the router.\n"
        yield "# TYPE commons_router_build_info gauge\n"
        yield (
            f'commons_router_build_info{{version="{_escape(info.version)}",'
            f'commit="{_escape(info.commit)}"}} 1\n'
        )
        yield from process_lines()
        yield "# HELP commons_router_requests_total Requests answered, by route, method, code.\n"
        yield "# TYPE commons_router_requests_total counter\n"
        for m in routes:
            name = _escape(m.name)
            for method, codes in sorted(m.codes.items()):
                for code, count in sorted(codes.items()):
                    yield (
                        f'commons_router_requests_total{{route="{name}",'
                        f'method="{method}",code="{code}"}} {count}\n'
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
        yield (
            "# HELP commons_router_request_body_bytes_total "
            "Request body bytes received (declared Content-Length), by route.\n"
        )
        yield "# TYPE commons_router_request_body_bytes_total counter\n"
        for m in routes:
            if m.count:
                yield (
                    f'commons_router_request_body_bytes_total{{route="{_escape(m.name)}"}} '
                    f"{m.bytes_in}\n"
                )
        yield (
            "# HELP commons_router_response_body_bytes_total Response body bytes sent, by route.\n"
        )
        yield "# TYPE commons_router_response_body_bytes_total counter\n"
        for m in routes:
            if m.count:
                yield (
                    f'commons_router_response_body_bytes_total{{route="{_escape(m.name)}"}} '
                    f"{m.bytes_out}\n"
                )
        yield "# HELP commons_router_upstream_errors_total Failed upstream attempts, by kind.\n"
        yield "# TYPE commons_router_upstream_errors_total counter\n"
        for m in routes:
            for kind, count in sorted(m.upstream_errors.items()):
                yield (
                    f'commons_router_upstream_errors_total{{route="{_escape(m.name)}",'
                    f'kind="{kind}"}} {count}\n'
                )
        yield from self._endpoint_lines()
        yield "# HELP commons_router_plugin_errors_total Exceptions raised by plugins.\n"
        yield "# TYPE commons_router_plugin_errors_total counter\n"
        for plugin, count in sorted(self.plugin_errors.items()):
            yield f'commons_router_plugin_errors_total{{plugin="{_escape(plugin)}"}} {count}\n'
        for name in sorted(self.plugin_counters):
            yield from self.plugin_counters[name].lines()
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
        if self.connections is not None:
            yield (
                "# HELP commons_router_open_connections "
                "Client connections open on the public listener.\n"
            )
            yield "# TYPE commons_router_open_connections gauge\n"
            yield f"commons_router_open_connections {self.connections()}\n"
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
        yield (
            "# HELP commons_router_config_last_reload_success_timestamp_seconds "
            "When the configuration was last loaded successfully.\n"
        )
        yield "# TYPE commons_router_config_last_reload_success_timestamp_seconds gauge\n"
        yield (f"commons_router_config_last_reload_success_timestamp_seconds {self.last_reload}\n")
        yield (
            "# HELP commons_router_config_last_reload_successful "
            "1 when the last reload attempt succeeded.\n"
        )
        yield "# TYPE commons_router_config_last_reload_successful gauge\n"
        yield f"commons_router_config_last_reload_successful {int(self.last_reload_ok)}\n"
        access_log = self.access_log
        if access_log is not None:
            yield (
                "# HELP commons_router_access_log_dropped_total "
                "Access-log lines dropped because the writer fell behind.\n"
            )
            yield "# TYPE commons_router_access_log_dropped_total counter\n"
            yield f"commons_router_access_log_dropped_total {access_log.dropped}\n"
            yield (
                "# HELP commons_router_access_log_write_errors_total "
                "Access-log lines lost to failed writes.\n"
            )
            yield "# TYPE commons_router_access_log_write_errors_total counter\n"
            yield f"commons_router_access_log_write_errors_total {access_log.write_errors}\n"
        for collect in self.collectors:
            yield from collect()
