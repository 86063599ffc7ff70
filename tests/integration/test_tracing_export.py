"""OTLP/HTTP export to a working, a black-hole and a missing collector: failed batches are
freed when their export returns (with the garbage collector off, as good as a router that
rarely runs a full collection), and the spans alive stay within the queue's bound."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import time
import weakref
from collections.abc import Iterator

import pytest
from aiohttp import ClientSession
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from router.testing import Backend, run_router
from router_plugins.tracing import TracingPlugin
from router_plugins.tracing.export import OtlpHttpSpanExporter, resolve_endpoint
from router_plugins.tracing.settings import TracingConfig
from router_plugins.tracing.setup import build_exporter
from tests.support.otlp import otlp_receiver


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """A collector that accepts connections (the kernel does, from the backlog) and never
    reads a byte or answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/traces"


@contextlib.contextmanager
def closed_port() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1/traces"


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def finished_spans(count: int) -> list[ReadableSpan]:
    tracer = TracerProvider().get_tracer("test")
    spans = []
    for index in range(count):
        span = tracer.start_span(f"span {index}", attributes={"url.path": f"/{index}"})
        span.end()
        spans.append(span)
    return spans


class WatchedTracing(TracingPlugin):
    """The tracing plugin as configured, keeping a hand on the exporter it built."""

    exporters: list[SpanExporter] = []  # noqa: RUF012 - filled by the running plugin

    def make_exporter(self) -> SpanExporter | None:
        exporter = super().make_exporter()
        if exporter is not None:
            WatchedTracing.exporters.append(exporter)
        return exporter


def live_spans() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, ReadableSpan))


@pytest.mark.parametrize("dead", [black_hole, closed_port])
def test_a_failed_batch_is_freed_when_its_export_returns(
    dead: object, caplog: pytest.LogCaptureFixture
) -> None:
    assert callable(dead)
    with dead() as endpoint:
        config = TracingConfig.model_validate(
            {"exporter": "otlp_http", "endpoint": endpoint, "export_timeout": "300ms"}
        )
        exporter = build_exporter(config)
        assert exporter is not None
        try:
            with collector_off():
                batch = finished_spans(50)
                alive = [weakref.ref(span) for span in batch]
                assert exporter.export(batch) is SpanExportResult.FAILURE
                del batch
                assert [ref() for ref in alive if ref() is not None] == []
        finally:
            exporter.shutdown()
    (warning,) = [r for r in caplog.records if "exporting 50 spans" in r.getMessage()]
    assert endpoint in warning.getMessage()
    assert warning.exc_info is None and "Traceback" not in caplog.text


async def test_a_working_collector_gets_the_batch() -> None:
    async with otlp_receiver() as (endpoint, received):
        exporter = OtlpHttpSpanExporter(endpoint, {"x-api-key": "k"}, 5.0)
        try:
            for _ in range(2):  # the second batch reuses the connection
                outcome = await asyncio.to_thread(exporter.export, finished_spans(3))
                assert outcome is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
    assert [span["name"] for span in received.spans] == [f"span {i}" for i in (0, 1, 2)] * 2


def test_the_endpoint_follows_the_otlp_variables() -> None:
    assert resolve_endpoint("http://c:1/x", {}) == "http://c:1/x"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}
    assert resolve_endpoint(None, env) == "http://collector:4318/v1/traces"
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://traces:4318/custom"
    assert resolve_endpoint(None, env) == "http://traces:4318/custom"
    assert resolve_endpoint(None, {}) == "http://localhost:4318/v1/traces"


async def test_with_a_dead_collector_spans_alive_stay_within_the_queue(
    backend: Backend, client: ClientSession
) -> None:
    queue, batch = 64, 16
    with closed_port() as endpoint:
        settings = {
            "plugins": [
                {
                    "name": "tracing",
                    "config": {
                        "exporter": "otlp_http",
                        "endpoint": endpoint,
                        "sampling_ratio": 1.0,
                        "queue_size": queue,
                        "batch_size": batch,
                        "schedule_delay": "10ms",
                        "export_timeout": "300ms",
                    },
                }
            ],
            "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
        }
        WatchedTracing.exporters.clear()
        async with run_router(settings, plugins={"tracing": WatchedTracing}) as router:
            (exporter,) = WatchedTracing.exporters
            with collector_off():
                for _ in range(20):
                    for response in await asyncio.gather(
                        *(client.get(router.url + f"/{i}") for i in range(20))
                    ):
                        assert response.status == 200
                        response.release()
                    await asyncio.sleep(0.02)  # let the batch thread export what it has
                # Once the batch thread is idle, only what waits in the queue may be alive.
                deadline = time.monotonic() + 5
                while live_spans() > queue + batch and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert live_spans() <= queue + batch
            assert getattr(exporter, "failed_batches", 0) >= 10
