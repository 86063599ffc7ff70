"""The direct span encoder writes exactly the bytes of the SDK's OTLP encoder."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from router_plugins.tracing.encoding import SpanEncoder

REMOTE = SpanContext(
    0x4BF92F3577B34DA6A3CE929D0E0E4736,
    0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(1),
    trace_state=TraceState([("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]),
)


def varied_spans() -> list[ReadableSpan]:
    router = TracerProvider(
        resource=Resource.create({"service.name": "commons-router", "k8s.pod.name": "r-1"}),
        span_limits=SpanLimits(max_span_attributes=12),
    )
    other = TracerProvider(resource=Resource({"service.name": "other"}, "https://schema/1"))
    tracer = router.get_tracer("commons-router", "0.1.0")
    scoped = router.get_tracer("second", None, "https://schema/2", {"scope.attr": 1})
    spans: list[ReadableSpan] = []

    server = tracer.start_span(
        "GET /api",
        context=set_span_in_context(NonRecordingSpan(REMOTE)),
        kind=SpanKind.SERVER,
        links=[Link(REMOTE, {"commons_router.link": "untrusted caller"})],
    )
    server.set_attributes(
        {
            "http.request.method": "GET",
            "url.path": "/api/ünïcode",
            "server.port": 8080,
            "negative": -5,
            "big": 2**62,
            "ratio": 0.25,
            "flag": True,
            "off": False,
            "empty": "",
            "names": ["a", "b"],
            "numbers": [1, 2, 3],
            "mixed.floats": [0.5, 1.5],
        }
    )
    server.set_attribute("over.the.limit", "dropped")
    server.add_event("retry", {"attempt": 2})
    server.add_event("")
    server.set_status(Status(StatusCode.ERROR, "upstream timed out"))
    client = tracer.start_span("GET", context=set_span_in_context(server), kind=SpanKind.CLIENT)
    client.set_attribute("http.response.status_code", 200)
    client.set_status(Status(StatusCode.OK))
    client.end()
    server.end()
    spans += [client, server]

    for kind in (SpanKind.INTERNAL, SpanKind.PRODUCER, SpanKind.CONSUMER):
        span = scoped.start_span("", kind=kind)
        span.end()
        spans.append(span)
    foreign = other.get_tracer("x").start_span("other resource")
    foreign.end()
    spans.append(foreign)
    for _ in range(3):  # repeated attributes come from the encoder's cache
        again = tracer.start_span("GET /api", kind=SpanKind.SERVER)
        again.set_attributes({"http.request.method": "GET", "server.port": 8080, "flag": True})
        again.end()
        spans.append(again)
    return spans


def test_bytes_equal_the_sdk_encoders() -> None:
    spans = varied_spans()
    expected = encode_spans(spans).SerializeToString()
    encoder = SpanEncoder()
    assert encoder.encode(spans) == expected
    assert encoder.encode(spans) == expected  # and again, from the caches
    decoded = ExportTraceServiceRequest.FromString(encoder.encode(spans))
    assert len(decoded.resource_spans) == 2
    assert sum(len(s.spans) for r in decoded.resource_spans for s in r.scope_spans) == len(spans)


def test_an_empty_batch_is_an_empty_request() -> None:
    assert SpanEncoder().encode([]) == b""
