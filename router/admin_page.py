"""The admin home page: what this router serves and how it is doing, as HTML (no
JavaScript; the page reloads itself every 10 s) and as JSON.

The document is built from the running state only (route table, endpoint health, route
problems, metrics); the request rate and 5xx rate of each route are measured over the last
minute from samples taken every 5 seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from html import escape
from typing import Any

from router.buildinfo import build_info
from router.observability.metrics import Metrics

SAMPLE_INTERVAL = 5.0
RATE_WINDOW = 60.0

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class RateSampler:
    """Per-route totals (requests, 5xx answers) sampled over time, to report rates."""

    def __init__(self, metrics: Metrics, clock: Any = time.monotonic) -> None:
        self._metrics = metrics
        self._clock = clock
        self._samples: deque[tuple[float, dict[str, tuple[int, int]]]] = deque(
            maxlen=int(RATE_WINDOW / SAMPLE_INTERVAL) + 1
        )

    def _totals(self) -> dict[str, tuple[int, int]]:
        return {m.name: (m.count, m.errors()) for m in self._metrics.routes()}

    def sample(self) -> None:
        self._samples.append((self._clock(), self._totals()))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL)

    def rates(self) -> tuple[dict[str, tuple[float, float]], float]:
        """Route -> (requests/s, 5xx/s) since the oldest sample, and that span in seconds."""
        now, totals = self._clock(), self._totals()
        if not self._samples:
            return {name: (0.0, 0.0) for name in totals}, 0.0
        then, old = self._samples[0]
        span = now - then
        if span <= 0:
            return {name: (0.0, 0.0) for name in totals}, 0.0
        rates = {}
        for name, (count, errors) in totals.items():
            before = old.get(name, (0, 0))
            rates[name] = ((count - before[0]) / span, (errors - before[1]) / span)
        return rates, span


def _round(value: float) -> float:
    return round(value, 3)


def active_plugins(global_plugins: tuple[str, ...], route: Any) -> list[str]:
    """Plugins that act on this route's requests: those on every request (before
    routing), then the route's own, in the order they run."""
    return [*global_plugins, *(name for name in route.plugins if name not in global_plugins)]


def route_summary(route: Any, now: float, global_plugins: tuple[str, ...]) -> dict[str, Any]:
    """What ``/routes`` says of a route: where it answers, what acts on it, its endpoints."""
    spec = route.spec
    return {
        "name": spec.name,
        "hosts": spec.hosts or ["*any*"],
        "path": spec.path,
        "path_type": spec.path_type,
        "builtin": spec.builtin,
        "balancer": spec.balancer,
        "plugins": active_plugins(global_plugins, route),
        "endpoints": [
            {
                "url": endpoint.url,
                "healthy": endpoint.ejected_until <= now,
                "outstanding": endpoint.outstanding,
                "version": dict(endpoint.version),
            }
            for endpoint in route.endpoints
        ],
    }


def route_entries(
    routes: Iterable[Any],
    rates: dict[str, tuple[float, float]],
    now: float,
    global_plugins: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The summaries with what the home page adds: request counts and rates."""
    entries = []
    for route in routes:
        entry = route_summary(route, now, global_plugins)
        rate, errors = rates.get(route.name, (0.0, 0.0))
        metrics = route.metrics
        entry.update(
            requests=metrics.count,
            errors_5xx=metrics.errors(),
            rate_per_second=_round(rate),
            errors_per_second=_round(errors),
        )
        for shown, endpoint in zip(entry["endpoints"], route.endpoints, strict=True):
            shown["requests"] = endpoint.attempts
            shown["failures"] = endpoint.failed_attempts
        entries.append(entry)
    return entries


def router_section(global_plugins: Iterable[str]) -> dict[str, Any]:
    info = build_info()
    return {
        "version": info.version,
        "commit": info.commit,
        "dirty": info.dirty,
        "global_plugins": list(global_plugins),
    }


def merge_status(documents: list[dict[str, Any]], workers: list[dict[str, Any]]) -> dict[str, Any]:
    """One document for several workers: routes as the first worker has them, with
    request counts and rates summed over the workers, and each endpoint healthy only where
    every worker finds it healthy."""
    if not documents:
        return {
            "router": router_section(()),
            "generation": 0,
            "rate_window_seconds": RATE_WINDOW,
            "routes": [],
            "problems": [],
            "workers": workers,
        }
    merged = dict(documents[0])
    routes: dict[str, dict[str, Any]] = {}
    for document in documents:
        for route in document["routes"]:
            seen = routes.get(route["name"])
            if seen is None:
                routes[route["name"]] = {
                    **route,
                    "endpoints": [{**e, "healthy_workers": 0} for e in route["endpoints"]],
                }
                seen = routes[route["name"]]
                first = True
            else:
                first = False
                for key in ("requests", "errors_5xx", "rate_per_second", "errors_per_second"):
                    seen[key] = _round(seen[key] + route[key])
            by_url = {e["url"]: e for e in seen["endpoints"]}
            for endpoint in route["endpoints"]:
                mine = by_url.get(endpoint["url"])
                if mine is None:
                    continue
                if not first:
                    mine["requests"] += endpoint["requests"]
                    mine["failures"] += endpoint["failures"]
                    mine["healthy"] = mine["healthy"] and endpoint["healthy"]
                    mine["outstanding"] += endpoint["outstanding"]
                mine["healthy_workers"] += 1 if endpoint["healthy"] else 0
    for route in routes.values():
        for endpoint in route["endpoints"]:
            endpoint["healthy_workers"] = (
                f"healthy in {endpoint['healthy_workers']} of {len(documents)} workers"
            )
    problems: list[dict[str, Any]] = []
    for document in documents:
        problems.extend(p for p in document["problems"] if p not in problems)
    merged.update(routes=list(routes.values()), problems=problems, workers=workers)
    return merged


# -- HTML ------------------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.5em 0 .4em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .6em;
border-bottom:1px solid #ddd;vertical-align:top}th{background:#f3f3f3}
.ok{color:#1a7f37}.bad{color:#c62828;font-weight:600}.muted{color:#666}
code{font:12px ui-monospace,monospace}ul{margin:0;padding-left:1.1em}
"""


def _text(value: Any) -> str:
    return escape(str(value), quote=True)


def _version(version: dict[str, str]) -> str:
    if not version:
        return '<span class="muted">unknown</span>'
    return "<br>".join(
        f"{_text(key)}: <code>{_text(value)}</code>" for key, value in sorted(version.items())
    )


def _endpoints(endpoints: list[dict[str, Any]]) -> str:
    if not endpoints:
        return '<span class="muted">none (built-in)</span>'
    items = []
    for endpoint in endpoints:
        health = (
            '<span class="ok">healthy</span>'
            if endpoint["healthy"]
            else '<span class="bad">ejected</span>'
        )
        workers = endpoint.get("healthy_workers")
        if workers is not None:
            health += f' <span class="muted">({_text(workers)})</span>'
        items.append(
            f"<li><code>{_text(endpoint['url'])}</code> {health}"
            f' <span class="muted">{_text(endpoint["requests"])} requests,'
            f" {_text(endpoint['failures'])} failures</span><br>{_version(endpoint['version'])}"
            "</li>"
        )
    return "<ul>" + "".join(items) + "</ul>"


def render_html(document: dict[str, Any]) -> str:
    router = document["router"]
    dirty = " (with uncommitted changes)" if router.get("dirty") else ""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta http-equiv="refresh" content="10">',
        "<title>commons-router admin</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>commons-router</h1>",
        f'<p class="muted">version {_text(router["version"])}, commit '
        f"<code>{_text(router['commit'])}</code>{_text(dirty)} &middot; route table "
        f"{_text(document['generation'])} &middot; rates over the last "
        f"{_text(document['rate_window_seconds'])} s &middot; "
        '<a href="/status">JSON</a> &middot; <a href="/metrics">metrics</a></p>',
    ]
    globals_ = router["global_plugins"]
    parts.append(
        "<p>Plugins on every request: "
        + (", ".join(f"<code>{_text(p)}</code>" for p in globals_) or "none")
        + "</p>"
    )
    workers = document.get("workers")
    if workers:
        parts.append("<h2>Workers</h2><table><tr><th>worker</th><th>process</th><th>state</th>")
        parts.append("<th>restarts</th><th>route table</th></tr>")
        for worker in workers:
            state = (
                '<span class="ok">running</span>'
                if worker["answered"]
                else '<span class="bad">not answering</span>'
            )
            parts.append(
                f"<tr><td>{_text(worker['index'])}</td><td>{_text(worker['pid'])}</td>"
                f"<td>{state}</td><td>{_text(worker['restarts'])}</td>"
                f"<td>{_text(worker.get('generation', ''))}</td></tr>"
            )
        parts.append("</table>")
    problems = document["problems"]
    parts.append(f"<h2>Problems ({len(problems)})</h2>")
    if problems:
        parts.append("<table><tr><th>source</th><th>route</th><th>problem</th></tr>")
        for problem in problems:
            parts.append(
                f"<tr><td>{_text(problem['source'])}</td>"
                f"<td>{_text(problem['route'] or '')}</td>"
                f'<td class="bad">{_text(problem["message"])}</td></tr>'
            )
        parts.append("</table>")
    else:
        parts.append('<p class="ok">none</p>')
    certificates = document.get("certificates")
    if certificates is not None:
        parts.append(f"<h2>Certificates ({len(certificates)})</h2>")
        parts.append(
            "<table><tr><th>names</th><th>issuer</th><th>not after</th><th>source</th></tr>"
        )
        for certificate in certificates:
            parts.append(
                f"<tr><td>{'<br>'.join(_text(n) for n in certificate['names'])}</td>"
                f"<td>{_text(certificate['issuer'])}</td>"
                f"<td>{_text(certificate['not_after'])}</td>"
                f"<td><code>{_text(certificate['source'])}</code></td></tr>"
            )
        parts.append("</table>")
    parts.append(f"<h2>Routes ({len(document['routes'])})</h2>")
    parts.append(
        "<table><tr><th>route</th><th>hosts</th><th>path</th><th>plugins</th>"
        "<th>requests/s</th><th>5xx/s</th><th>endpoints and code versions</th></tr>"
    )
    for route in document["routes"]:
        plugins = ", ".join(f"<code>{_text(p)}</code>" for p in route["plugins"]) or (
            '<span class="muted">none</span>'
        )
        errors_class = "bad" if route["errors_per_second"] > 0 else ""
        parts.append(
            f"<tr><td><b>{_text(route['name'])}</b></td>"
            f"<td>{'<br>'.join(_text(h) for h in route['hosts'])}</td>"
            f"<td><code>{_text(route['path'])}</code> "
            f'<span class="muted">{_text(route["path_type"])}</span></td>'
            f"<td>{plugins}</td>"
            f"<td>{route['rate_per_second']:.2f}</td>"
            f'<td class="{errors_class}">{route["errors_per_second"]:.2f}</td>'
            f"<td>{_endpoints(route['endpoints'])}</td></tr>"
        )
    parts.append("</table></body></html>\n")
    return "".join(parts)
