"""Tracing configuration: exporters, resource attributes, pseudonyms, trusted peers."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from pydantic import ValidationError

from router_plugins.tracing.export import OtlpHttpSpanExporter as Http
from router_plugins.tracing.propagation import Pseudonyms
from router_plugins.tracing.settings import TracingConfig
from router_plugins.tracing.setup import (
    build_exporter,
    build_processor,
    build_resource,
    kubernetes_attributes,
)


@pytest.mark.parametrize(
    ("exporter", "kind"),
    [("otlp_http", Http), ("otlp_grpc", Grpc), ("console", ConsoleSpanExporter)],
)
def test_exporters(exporter: str, kind: type) -> None:
    built = build_exporter(TracingConfig.model_validate({"exporter": exporter}))
    assert isinstance(built, kind)
    built.shutdown()


def test_no_exporter_and_a_bounded_queue() -> None:
    assert build_exporter(TracingConfig.model_validate({"exporter": "none"})) is None
    config = TracingConfig.model_validate({"queue_size": 100, "batch_size": 1000})
    exporter = ConsoleSpanExporter()
    processor = build_processor(config, exporter)
    assert isinstance(processor, BatchSpanProcessor)
    processor.shutdown()


def test_resource_names_the_router_and_its_pod() -> None:
    config = TracingConfig.model_validate({"resource_attributes": {"deployment.environment": "x"}})
    resource = dict(build_resource(config, {}).attributes)
    assert resource["service.name"] == "commons-router"
    assert str(resource["service.version"]).startswith("0.1.0")
    assert resource["deployment.environment"] == "x"
    env = {"K8S_POD_NAME": "router-abc", "POD_NAMESPACE": "edge", "NODE_NAME": "n1"}
    assert kubernetes_attributes(env) == {
        "k8s.pod.name": "router-abc",
        "k8s.namespace.name": "edge",
        "k8s.node.name": "n1",
    }


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValidationError, match="invalid CIDR"):
        TracingConfig.model_validate({"trusted_peers": ["10.0.0.0/33"]})
    with pytest.raises(ValidationError, match="sampling_ratio"):
        TracingConfig.model_validate({"sampling_ratio": 2})
    with pytest.raises(ValidationError, match="propagators"):
        TracingConfig.model_validate({"propagators": ["zipkin"]})
    with pytest.raises(ValidationError, match="invalid baggage key"):
        TracingConfig.model_validate({"user_baggage": {"user_key": "user id"}})


def test_pseudonyms_are_keyed_and_stable() -> None:
    one, other = Pseudonyms(b"k1"), Pseudonyms(b"k2")
    assert one.of("alice") == Pseudonyms(b"k1").of("alice")
    assert one.of("alice") != other.of("alice")
    assert len(one.of("alice")) == 22  # 128 bits, base64url


def test_the_routers_root_decision_is_the_sdks() -> None:
    from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

    from router_plugins.tracing.setup import PresetIds, root_is_sampled, root_sampling_bound

    ids = PresetIds()
    for ratio in (0.0, 0.01, 0.5, 1.0):
        sampler, bound = TraceIdRatioBased(ratio), root_sampling_bound(ratio)
        for _ in range(2000):
            trace_id = ids.generate_trace_id()
            sdk = sampler.should_sample(None, trace_id, "x").decision is Decision.RECORD_AND_SAMPLE
            assert root_is_sampled(trace_id, bound) is sdk
    ids.preset = 42
    assert ids.generate_trace_id() == 42
    assert ids.generate_trace_id() != 42  # used once


async def test_sampling_ratio_is_honoured_for_new_traces() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from router_plugins.tracing.setup import PresetIds, build_provider

    config = TracingConfig.model_validate({"sampling_ratio": 0.25, "exporter": "none"})
    ids = PresetIds()
    provider: TracerProvider = build_provider(config, None, ids)
    tracer = provider.get_tracer("t")
    ids.preset = 1 << 70  # low 64 bits zero: below any non-zero bound, so recorded
    assert tracer.start_span("x").is_recording()
    ids.preset = (1 << 64) - 1  # above the 0.25 bound: not recorded
    assert not tracer.start_span("y").is_recording()
