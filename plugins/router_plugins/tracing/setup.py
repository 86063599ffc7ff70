"""The OpenTelemetry SDK pieces: resource, sampler, exporter behind a bounded queue.

Spans are exported by the SDK's batch processor on its own thread: the event loop only
appends finished spans to a bounded queue (dropping them when it is full), so a slow or
dead collector never slows requests. OTLP/HTTP goes through ``export.py``, which frees a
failed batch at once.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from router.api import build_info
from router_plugins.tracing.export import OtlpHttpSpanExporter
from router_plugins.tracing.settings import TracingConfig

# Downward-API variables a Kubernetes manifest sets (ours and common spellings).
K8S_ENV = {
    "k8s.pod.name": ("K8S_POD_NAME", "POD_NAME"),
    "k8s.namespace.name": ("K8S_NAMESPACE_NAME", "POD_NAMESPACE"),
    "k8s.node.name": ("K8S_NODE_NAME", "NODE_NAME"),
    "k8s.pod.uid": ("K8S_POD_UID", "POD_UID"),
}


def kubernetes_attributes(environ: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for attribute, names in K8S_ENV.items():
        for name in names:
            if environ.get(name):
                found[attribute] = environ[name]
                break
    if "k8s.pod.name" not in found and environ.get("KUBERNETES_SERVICE_HOST"):
        found["k8s.pod.name"] = socket.gethostname()  # a pod's hostname is its name
    return found


def build_resource(config: TracingConfig, environ: Mapping[str, str] = os.environ) -> Resource:
    info = build_info()
    commit, version = info.commit, info.version
    attributes: dict[str, str] = {
        "service.name": config.service_name,
        "service.version": f"{version}+{commit[:12]}" if commit != "unknown" else version,
        "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
        "commons_router.build.commit": commit,
        **kubernetes_attributes(environ),
        **config.resource_attributes,
    }
    # Resource.create also merges OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME.
    return Resource.create(attributes)


def build_exporter(config: TracingConfig) -> SpanExporter | None:
    if config.exporter == "none":
        return None
    if config.exporter == "console":
        return ConsoleSpanExporter()
    if config.exporter == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        endpoint = config.endpoint
        return GrpcExporter(
            endpoint=endpoint,
            insecure=endpoint.startswith("http://") if endpoint else None,
            headers=dict(config.headers),
            timeout=config.export_timeout,
        )
    return OtlpHttpSpanExporter(config.endpoint, config.headers, config.export_timeout)


def build_processor(config: TracingConfig, exporter: SpanExporter) -> SpanProcessor:
    return BatchSpanProcessor(
        exporter,
        max_queue_size=config.queue_size,
        schedule_delay_millis=config.schedule_delay * 1000,
        max_export_batch_size=min(config.batch_size, config.queue_size),
        export_timeout_millis=config.export_timeout * 1000,
    )


class PresetIds(RandomIdGenerator):
    """Random ids, except a trace id the router drew just before starting a root span.

    The router draws a root's trace id first and applies the ratio sampler's own rule to it
    (:func:`root_is_sampled`): a trace that would not be recorded then costs no SDK span at
    all, and one that would is started by the SDK with that same id (same decision).
    """

    def __init__(self) -> None:
        self.preset = 0

    def generate_trace_id(self) -> int:
        preset = self.preset
        if preset:
            self.preset = 0
            return preset
        return super().generate_trace_id()


def root_sampling_bound(ratio: float) -> int:
    return TraceIdRatioBased.get_bound_for_rate(ratio)


_TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT


def root_is_sampled(trace_id: int, bound: int) -> bool:
    """The decision ``TraceIdRatioBased`` makes for a root span with this trace id."""
    return trace_id & _TRACE_ID_LIMIT < bound


def build_provider(
    config: TracingConfig, processor: SpanProcessor | None, ids: PresetIds | None = None
) -> TracerProvider:
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(config.sampling_ratio)),
        resource=build_resource(config),
        shutdown_on_exit=False,
        id_generator=ids,
    )
    if processor is not None:
        provider.add_span_processor(processor)
    return provider
