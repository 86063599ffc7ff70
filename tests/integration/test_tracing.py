"""The tracing plugin against a running router, with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import re
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import ClientSession, web
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from router.api import Handler, Middleware, NoConfig, Plugin, context_of
from router.config.models import Route
from router.testing import Backend, RunningRouter, run_router
from router_plugins.tracing import TracingPlugin
from tests.support.otlp import otlp_grpc_receiver, otlp_receiver

VERSION = {"repository": "https://github.com/example/app", "commit": "4f2a9c1d0e", "pod": "app-1"}

# The specifications' own example values.
W3C_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
W3C_TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
W3C_BAGGAGE = "userId=alice,serverNode=DF%2028,isProduction=false"
B3_TRACE, B3_SPAN, B3_PARENT = (
    "80f198ee56343ba864fe8b2a57d3eff7",
    "e457b5a2e4d86bd1",
    "05e3ac9a4f6e3b90",
)


class MemoryTracing(TracingPlugin):
    # A new exporter per router: a stopped router shuts its exporter down.
    latest = InMemorySpanExporter()

    def make_exporter(self) -> SpanExporter:
        MemoryTracing.latest = InMemorySpanExporter()
        return MemoryTracing.latest

    def make_processor(self, exporter: SpanExporter) -> SpanProcessor:
        return SimpleSpanProcessor(exporter)


class FakeLogin(Plugin[NoConfig]):
    """Stands in for the authentication plugin: it names the user in the log fields."""

    name = "fake_login"

    def middleware(self, route: Route, route_config: Any) -> Middleware:
        async def login(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            user = request.headers.get("X-Test-Login")
            if user:
                context_of(request).add_log_field("user", user)
                context_of(request).add_log_field("account", "acme")
            return await handler(request)

        return login


PLUGINS = {"tracing": MemoryTracing, "fake_login": FakeLogin}


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    MemoryTracing.latest = InMemorySpanExporter()
    yield


def config(backend: Backend, **settings: Any) -> dict[str, Any]:
    return {
        "plugins": [{"name": "tracing", "config": settings}, {"name": "fake_login"}],
        "routes": [
            {
                "name": "app",
                "path": "/api",
                "strip_prefix": True,
                "health": {"max_failures": 1000},
                "upstreams": [{"url": backend.url, "version": VERSION}],
            }
        ],
    }


async def upstream_headers(
    client: ClientSession, router: RunningRouter, headers: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(headers the backend received, headers the client got back)."""
    async with client.get(router.url + "/api/x?secret=1", headers=headers or {}) as response:
        assert response.status == 200
        seen = await response.json()
        return {k.lower(): v for k, v in seen["headers"]}, dict(response.headers)


def spans(kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in MemoryTracing.latest.get_finished_spans() if span.kind == kind]


def parse_baggage(value: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in value.split(",") if item.strip())
    return {k.strip(): unquote(v.strip()) for k, v in pairs}


async def test_server_and_client_spans_are_linked_and_described(
    backend: Backend, client: ClientSession
) -> None:
    async with run_router(config(backend), plugins=PLUGINS) as router:
        upstream, response = await upstream_headers(client, router)
        log = await router.access_log()
    (server,) = spans(SpanKind.SERVER)
    (attempt,) = spans(SpanKind.CLIENT)
    assert server.name == "GET /api"
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    assert attempt.context.trace_id == server.context.trace_id
    trace_id = format(server.context.trace_id, "032x")
    # The upstream continues the client span; the user can quote the trace id.
    flags = f"{int(server.context.trace_flags):02x}"  # sampled, and random (level 2)
    assert int(flags, 16) & 1
    assert upstream["traceparent"] == f"00-{trace_id}-{attempt.context.span_id:016x}-{flags}"
    assert response["traceresponse"] == f"00-{trace_id}-{server.context.span_id:016x}-{flags}"
    assert log[-1]["trace_id"] == trace_id
    attributes = dict(server.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == "/api/x"
    assert attributes["url.scheme"] == "http"
    assert attributes["http.route"] == "/api"
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == router.port
    assert attributes["client.address"] == "127.0.0.1"
    assert "url.query" not in attributes  # may hold secrets
    assert attributes["vcs.ref.head.revision"] == VERSION["commit"]
    assert attributes["vcs.repository.url.full"] == VERSION["repository"]
    assert attributes["k8s.pod.name"] == "app-1"
    client_attributes = dict(attempt.attributes or {})
    assert client_attributes["server.address"] == "127.0.0.1"
    assert client_attributes["server.port"] == backend.port
    assert client_attributes["http.response.status_code"] == 200
    resource = dict(server.resource.attributes)
    assert resource["service.name"] == "commons-router"
    assert str(resource["service.version"]).startswith("0.1.0")


async def test_errors_and_404s_get_server_spans(backend: Backend, client: ClientSession) -> None:
    async with run_router(config(backend), plugins=PLUGINS) as router:
        async with client.get(router.url + "/nowhere") as response:
            assert response.status == 404
            assert response.headers["traceresponse"].startswith("00-")
        async with client.get(router.url + "/api/../api/status/503") as response:
            assert response.status == 503
    by_status = {
        span.attributes["http.response.status_code"]: span for span in spans(SpanKind.SERVER)
    }  # type: ignore[index]
    assert by_status[404].name == "GET"
    assert by_status[503].attributes["error.type"] == "503"  # type: ignore[index]
    (attempt,) = spans(SpanKind.CLIENT)
    assert attempt.attributes["error.type"] == "503"  # type: ignore[index]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_each_retry_is_its_own_client_span(backend: Backend, client: ClientSession) -> None:
    settings = config(backend)
    settings["routes"][0]["upstreams"].insert(0, {"url": f"http://127.0.0.1:{closed_port()}"})
    async with run_router(settings, plugins=PLUGINS) as router:
        deadline = time.monotonic() + 10
        while True:
            MemoryTracing.latest.clear()
            async with client.get(router.url + "/api/x") as response:
                assert response.status == 200
            attempts = spans(SpanKind.CLIENT)
            if len(attempts) == 2:
                break
            assert time.monotonic() < deadline, "the dead endpoint was never tried first"
    (server,) = spans(SpanKind.SERVER)
    assert {a.parent.span_id for a in attempts if a.parent} == {server.context.span_id}
    assert [a.attributes.get("error.type") for a in attempts] == ["connect", None]  # type: ignore[union-attr]


async def test_trusted_caller_context_is_continued(backend: Backend, client: ClientSession) -> None:
    settings = config(backend, trusted_peers=["127.0.0.0/8"])
    async with run_router(settings, plugins=PLUGINS) as router:
        upstream, response = await upstream_headers(
            client,
            router,
            {"traceparent": W3C_TRACEPARENT, "tracestate": W3C_TRACESTATE, "baggage": W3C_BAGGAGE},
        )
    (server,) = spans(SpanKind.SERVER)
    assert format(server.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert server.parent is not None and format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert upstream["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert upstream["tracestate"] == W3C_TRACESTATE
    assert parse_baggage(upstream["baggage"]) == parse_baggage(W3C_BAGGAGE)
    assert response["traceresponse"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")


async def test_untrusted_caller_starts_a_new_trace_linked_to_its_own(
    backend: Backend, client: ClientSession
) -> None:
    settings = config(backend, sampling_ratio=0.0)
    async with run_router(settings, plugins=PLUGINS) as router:
        upstream, response = await upstream_headers(
            client,
            router,
            {"traceparent": W3C_TRACEPARENT, "tracestate": W3C_TRACESTATE, "baggage": W3C_BAGGAGE},
        )
    # Not recorded (ratio 0): the caller's "sampled" flag cannot force recording.
    assert spans(SpanKind.SERVER) == []
    assert int(response["traceresponse"].rsplit("-", 1)[1], 16) & 1 == 0
    assert "4bf92f3577b34da6a3ce929d0e0e4736" not in upstream["traceparent"]
    # Unrecorded: the upstream continues the router's server span (no client span is made).
    assert upstream["traceparent"].split("-")[1:3] == response["traceresponse"].split("-")[1:3]
    assert "tracestate" not in upstream
    assert "baggage" not in upstream
    async with run_router(config(backend), plugins=PLUGINS) as router:
        await upstream_headers(client, router, {"traceparent": W3C_TRACEPARENT})
    (server,) = spans(SpanKind.SERVER)
    assert server.parent is None
    (link,) = server.links
    assert format(link.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert format(link.context.span_id, "016x") == "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("propagator", "inbound", "check"),
    [
        (
            "b3",
            {"b3": f"{B3_TRACE}-{B3_SPAN}-1-{B3_PARENT}"},
            lambda h, span: h["b3"] == f"{B3_TRACE}-{span:016x}-1",
        ),
        (
            "b3multi",
            {"X-B3-TraceId": B3_TRACE, "X-B3-SpanId": B3_SPAN, "X-B3-Sampled": "1"},
            lambda h, span: (
                (h["x-b3-traceid"], h["x-b3-spanid"], h["x-b3-sampled"])
                == (B3_TRACE, f"{span:016x}", "1")
            ),
        ),
        (
            "jaeger",
            {"uber-trace-id": f"{B3_TRACE}:{B3_SPAN}:0:1", "uberctx-color": "red"},
            lambda h, span: (
                h["uber-trace-id"].split(":")[0].zfill(32) == B3_TRACE
                and h["uber-trace-id"].split(":")[1].zfill(16) == f"{span:016x}"
                and h["uberctx-color"] == "red"
            ),
        ),
        (
            "tracecontext",
            {"traceparent": W3C_TRACEPARENT},
            lambda h, span: h["traceparent"].startswith(
                f"00-4bf92f3577b34da6a3ce929d0e0e4736-{span:016x}-0"
            ),
        ),
    ],
)
async def test_propagation_round_trip(
    backend: Backend, client: ClientSession, propagator: str, inbound: dict[str, str], check: Any
) -> None:
    settings = config(backend, propagators=[propagator], trusted_peers=["127.0.0.1/32"])
    async with run_router(settings, plugins=PLUGINS) as router:
        upstream, _ = await upstream_headers(client, router, inbound)
    (server,) = spans(SpanKind.SERVER)
    (attempt,) = spans(SpanKind.CLIENT)
    expected_trace = (
        B3_TRACE if propagator != "tracecontext" else "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert format(server.context.trace_id, "032x") == expected_trace
    assert check(upstream, attempt.context.span_id), upstream


async def test_spoofed_identity_baggage_is_removed(backend: Backend, client: ClientSession) -> None:
    settings = config(
        backend,
        propagators=["tracecontext", "baggage", "jaeger"],
        trusted_peers=["127.0.0.0/8"],
        user_baggage={"reserved_keys": ["tenant"]},
    )
    async with run_router(settings, plugins=PLUGINS) as router:
        upstream, _ = await upstream_headers(
            client,
            router,
            {
                "baggage": "user.id=mallory,account.id=evil,tenant=x,color=red",
                "uberctx-user.id": "mallory",
                "b3": f"{B3_TRACE}-{B3_SPAN}-1",  # a format not configured: not passed on
            },
        )
    assert parse_baggage(upstream["baggage"]) == {"color": "red"}
    assert "uberctx-user.id" not in upstream
    assert upstream["uberctx-color"] == "red"
    assert "b3" not in upstream


@pytest.mark.parametrize("ratio", [1.0, 0.0])
async def test_authenticated_user_is_sent_as_a_pseudonym(
    backend: Backend, client: ClientSession, ratio: float
) -> None:
    key = "a-test-key-of-sufficient-length"
    settings = config(backend, user_baggage={"hash_key": key}, sampling_ratio=ratio)
    async with run_router(settings, plugins=PLUGINS) as router:
        upstream, _ = await upstream_headers(
            client, router, {"X-Test-Login": "alice@example.org", "baggage": "user.id=mallory"}
        )
        anonymous, _ = await upstream_headers(client, router)

    def pseudonym(identity: str) -> str:
        digest = hmac.new(key.encode(), identity.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    entries = parse_baggage(upstream["baggage"])
    assert entries == {"user.id": pseudonym("alice@example.org"), "account.id": pseudonym("acme")}
    assert "alice" not in upstream["baggage"]
    assert "baggage" not in anonymous


async def test_spans_reach_a_real_otlp_http_receiver(
    backend: Backend, client: ClientSession
) -> None:
    async with otlp_receiver() as (endpoint, received):
        settings = {
            "plugins": [
                {
                    "name": "tracing",
                    "config": {
                        "exporter": "otlp_http",
                        "endpoint": endpoint,
                        "schedule_delay": "50ms",
                    },
                }
            ],
            "routes": [{"name": "app", "upstreams": [{"url": backend.url, "version": VERSION}]}],
        }
        async with run_router(settings) as router:
            async with client.get(router.url + "/hello") as response:
                trace_id = response.headers["traceresponse"].split("-")[1]
            deadline = time.monotonic() + 15
            while len([s for s in received.spans if s["trace_id"] == trace_id]) < 2:
                assert time.monotonic() < deadline, received.spans
                await asyncio.sleep(0.05)
    mine = [s for s in received.spans if s["trace_id"] == trace_id]
    (server,) = [s for s in mine if s["kind"] == 2]  # SPAN_KIND_SERVER
    (attempt,) = [s for s in mine if s["kind"] == 3]  # SPAN_KIND_CLIENT
    assert server["parent_span_id"] == ""
    assert attempt["parent_span_id"] == server["span_id"]
    assert server["attributes"]["http.route"] == "/"
    assert server["attributes"]["vcs.ref.head.revision"] == VERSION["commit"]
    assert received.resources[0]["service.name"] == "commons-router"


async def test_a_dead_collector_does_not_break_requests(
    backend: Backend, client: ClientSession
) -> None:
    settings = {
        "plugins": [
            {
                "name": "tracing",
                "config": {
                    "exporter": "otlp_http",
                    "endpoint": f"http://127.0.0.1:{closed_port()}/v1/traces",
                    "queue_size": 16,
                    "batch_size": 4,
                    "schedule_delay": "10ms",
                    "export_timeout": "1s",
                },
            }
        ],
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }
    async with run_router(settings) as router:
        statuses = await asyncio.gather(
            *(client.get(router.url + f"/{i}") for i in range(200)), return_exceptions=False
        )
        assert [r.status for r in statuses] == [200] * 200
        for r in statuses:
            r.release()


async def test_spans_reach_a_real_otlp_grpc_receiver(
    backend: Backend, client: ClientSession
) -> None:
    async with otlp_grpc_receiver() as (endpoint, received):
        settings = {
            "plugins": [
                {
                    "name": "tracing",
                    "config": {
                        "exporter": "otlp_grpc",
                        "endpoint": endpoint,
                        "schedule_delay": "50ms",
                    },
                }
            ],
            "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
        }
        async with run_router(settings) as router:
            async with client.get(router.url + "/grpc") as response:
                trace_id = response.headers["traceresponse"].split("-")[1]
            deadline = time.monotonic() + 15
            while len([s for s in received.spans if s["trace_id"] == trace_id]) < 2:
                assert time.monotonic() < deadline, received.spans
                await asyncio.sleep(0.05)
    mine = {s["kind"]: s for s in received.spans if s["trace_id"] == trace_id}
    assert mine[3]["parent_span_id"] == mine[2]["span_id"]  # client under server


async def headers_over_websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({k.lower(): v for k, v in request.headers.items()})
    await ws.close()
    return ws


async def test_websocket_upgrades_carry_the_trace_and_not_the_clients(
    client: ClientSession,
) -> None:
    from router.testing import run_backend

    app = web.Application()
    app.router.add_get("/ws", headers_over_websocket)
    async with run_backend(app) as ws_backend:
        settings = {
            "plugins": [{"name": "tracing", "config": {}}],
            "routes": [{"name": "ws", "upstreams": [{"url": ws_backend.url}]}],
        }
        async with run_router(settings, plugins=PLUGINS) as router:
            async with client.ws_connect(
                router.url + "/ws",
                headers={"traceparent": W3C_TRACEPARENT, "uberctx-user.id": "mallory"},
            ) as ws:
                seen = await ws.receive_json()
    (server,) = spans(SpanKind.SERVER)
    assert seen["traceparent"].split("-")[1] == format(server.context.trace_id, "032x")
    assert "4bf92f3577b34da6a3ce929d0e0e4736" not in seen["traceparent"]
    assert "uberctx-user.id" not in seen


async def test_trusted_unrecorded_context_is_passed_on_whole(
    backend: Backend, client: ClientSession
) -> None:
    settings = config(backend, trusted_peers=["127.0.0.0/8"])
    unsampled = W3C_TRACEPARENT[:-2] + "00"
    async with run_router(settings, plugins=PLUGINS) as router:
        upstream, response = await upstream_headers(
            client,
            router,
            {"traceparent": unsampled, "tracestate": W3C_TRACESTATE, "baggage": W3C_BAGGAGE},
        )
    assert spans(SpanKind.SERVER) == []  # the caller decided not to record
    _, trace_id, span_id, flags = upstream["traceparent"].split("-")
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span_id != "00f067aa0ba902b7"  # the router's span, the caller's child
    assert int(flags, 16) & 1 == 0
    assert upstream["traceparent"] == response["traceresponse"]
    assert upstream["tracestate"] == W3C_TRACESTATE
    assert parse_baggage(upstream["baggage"]) == parse_baggage(W3C_BAGGAGE)


async def test_unrecorded_trace_ids_do_not_come_from_pythons_random(
    backend: Backend, client: ClientSession
) -> None:
    # Python's Mersenne Twister can be predicted from its earlier outputs; the ids of
    # unrecorded traces are drawn from the OS generator, so its state does not decide them.
    async with run_router(config(backend, sampling_ratio=0.0), plugins=PLUGINS) as router:
        seen = []
        for _ in range(2):
            random.seed(7)
            upstream, response = await upstream_headers(client, router)
            assert upstream["traceparent"] == response["traceresponse"]
            seen.append(response["traceresponse"])
    assert seen[0] != seen[1]
    assert all(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[02]", value) for value in seen)


async def test_an_all_zero_trace_or_span_id_is_drawn_again(
    backend: Backend, client: ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # W3C: all-zero ids are invalid. The pool hands out a zero trace id, then a zero span
    # id, then random bytes: the router must skip the first two draws.
    from router.randomness import RandomHex

    real = RandomHex.take
    draws = iter(["0" * 32 + "ab" * 8, "cd" * 16 + "0" * 16])

    def take(self: RandomHex, nbytes: int) -> str:
        if nbytes == 24:
            drawn = next(draws, None)
            if drawn is not None:
                return drawn
        return real(self, nbytes)

    monkeypatch.setattr(RandomHex, "take", take)
    async with run_router(config(backend, sampling_ratio=0.0), plugins=PLUGINS) as router:
        upstream, response = await upstream_headers(client, router)
    _, trace_id, span_id, _flags = response["traceresponse"].split("-")
    assert next(draws, None) is None  # both bad draws were made
    assert trace_id != "0" * 32 and span_id != "0" * 16
    assert (trace_id, span_id) != ("cd" * 16, "0" * 16)
    assert upstream["traceparent"] == response["traceresponse"]


async def test_traceresponse_can_be_turned_off(backend: Backend, client: ClientSession) -> None:
    settings = config(backend, traceresponse=False)
    settings["plugins"].append({"name": "provenance", "config": {"sign": "always"}})
    async with run_router(settings, plugins=PLUGINS, dev_mode=True) as router:
        async with client.get(router.url + "/api/x") as response:
            assert response.status == 200
            assert "traceresponse" not in response.headers
            assert "traceresponse" not in response.headers["Signature-Input"]


@pytest.mark.parametrize("propagator", ["b3", "tracecontext"])
async def test_unrecorded_roots_reach_websocket_upstreams_with_the_traceresponse_ids(
    client: ClientSession, propagator: str
) -> None:
    from router.testing import run_backend

    app = web.Application()
    app.router.add_get("/ws", headers_over_websocket)
    async with run_backend(app) as ws_backend:
        settings = {
            "plugins": [
                {
                    "name": "tracing",
                    "config": {"sampling_ratio": 0.0, "propagators": [propagator]},
                }
            ],
            "routes": [{"name": "ws", "upstreams": [{"url": ws_backend.url}]}],
        }
        async with run_router(settings, plugins=PLUGINS) as router:
            async with client.ws_connect(router.url + "/ws") as ws:
                traceresponse = ws._response.headers["traceresponse"]
                seen = await ws.receive_json()
    assert spans(SpanKind.SERVER) == []
    _, trace_id, span_id, flags = traceresponse.split("-")
    assert int(flags, 16) & 1 == 0
    if propagator == "b3":
        assert seen["b3"].split("-")[:3] == [trace_id, span_id, "0"]
    else:
        assert seen["traceparent"] == traceresponse
