"""The ``tracing`` plugin class: server and client spans, propagation and baggage."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from opentelemetry import baggage
from opentelemetry.context import Context
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    get_current_span,
    set_span_in_context,
)
from yarl import URL

from router.api import (
    RANDOM_HEX,
    DevOptions,
    DevPreset,
    Handler,
    Middleware,
    Plugin,
    PluginServices,
    RequestContext,
    TrustedPeers,
    build_info,
    context_of,
)
from router_plugins.contracts import TRACE_RESPONSE, TraceResponse
from router_plugins.tracing.attributes import (
    CodeVersionAttributes,
    method_attributes,
    server_attributes,
)
from router_plugins.tracing.propagation import (
    W3C_FORMATS,
    Pseudonyms,
    W3CBaggage,
    build_propagator,
    clear_propagation_headers,
    has_propagation_headers,
    without_keys,
)
from router_plugins.tracing.settings import TracingConfig
from router_plugins.tracing.setup import (
    PresetIds,
    build_exporter,
    build_processor,
    build_provider,
    root_is_sampled,
    root_sampling_bound,
)

__all__ = ["TracingConfig", "TracingPlugin"]

logger = logging.getLogger("commons_router.plugin.tracing")

_UNTRUSTED_LINK = {"commons_router.link": "untrusted caller"}
_EMPTY = Context()
_NO_BAGGAGE = W3CBaggage()
"""Marker: W3C trace context without W3C baggage."""
# Flags of a root trace that is not recorded: the W3C level-2 "random trace id" bit only.
_UNRECORDED = TraceFlags(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16


class RequestTrace:
    """The server span of one request and the context upstream calls continue."""

    __slots__ = ("_context", "_span", "inbound", "parent", "recording", "traceresponse")

    def __init__(
        self,
        span: Span | None,
        parent: Context,
        traceresponse: str,
        inbound: bool,
        recording: bool,
    ) -> None:
        self._span = span
        """None for an unrecorded root: :attr:`span` makes it from ``traceresponse``."""
        self.parent = parent
        self._context: Context | None = None
        self.traceresponse = traceresponse
        self.inbound = inbound
        """The client sent propagation headers (to clear from upstream requests)."""
        self.recording = recording

    @property
    def span(self) -> Span:
        span = self._span
        if span is None:
            value = self.traceresponse
            span = self._span = NonRecordingSpan(
                SpanContext(int(value[3:35], 16), int(value[36:52], 16), False, _UNRECORDED)
            )
        return span

    @property
    def context(self) -> Context:
        """The parent context with the server span in it (made when first needed)."""
        context = self._context
        if context is None:
            context = self._context = set_span_in_context(self.span, self.parent)
        return context


TRACE_KEY: web.RequestKey[RequestTrace] = web.RequestKey("commons_router_trace", RequestTrace)


class _Responder(TraceResponse):
    def traceresponse(self, request: web.BaseRequest) -> str | None:
        try:
            return request[TRACE_KEY].traceresponse
        except KeyError:  # a request the tracing middleware did not see
            return None


class TracingPlugin(Plugin[TracingConfig]):
    name = "tracing"
    config_model = TracingConfig

    @classmethod
    def dev_preset(cls, options: DevOptions) -> DevPreset:
        # Spans go to a collector only when one is named the OpenTelemetry way.
        collector = any(
            options.environ.get(name)
            for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        )
        return DevPreset(order=10, config={"exporter": "otlp_http" if collector else "none"})

    def __init__(self, config: TracingConfig, services: PluginServices) -> None:
        super().__init__(config, services)
        self.provider: TracerProvider | None = None
        self.tracer: Tracer | None = None
        self.ids = PresetIds()
        self.propagator = build_propagator(config.propagators)
        self.trusted = TrustedPeers(config.trusted_peers)
        users = config.user_baggage
        self.reserved = frozenset({users.user_key, users.account_key, *users.reserved_keys})
        self.pseudonyms: Pseudonyms | None = None
        self.code_attributes = CodeVersionAttributes()
        self._endpoints: dict[str, dict[str, Any]] = {}
        self._sends_baggage = bool({"baggage", "jaeger"} & set(config.propagators))
        self._user_pairs = (
            (users.user_field, users.user_key),
            (users.account_field, users.account_key),
        )
        self._user_fields = frozenset(field for field, _key in self._user_pairs)
        # Only W3C formats: unrecorded requests get their headers written directly (the
        # traceparent is the traceresponse value), not through the generic propagators.
        self._w3c_baggage: W3CBaggage | None = None
        if "tracecontext" in config.propagators and set(config.propagators) <= W3C_FORMATS:
            self._w3c_baggage = W3CBaggage() if "baggage" in config.propagators else _NO_BAGGAGE

    # -- lifecycle -------------------------------------------------------------------

    def make_exporter(self) -> SpanExporter | None:
        """The exporter (override in tests to use the SDK's in-memory exporter)."""
        return build_exporter(self.config)

    def make_processor(self, exporter: SpanExporter) -> SpanProcessor:
        return build_processor(self.config, exporter)

    async def start(self) -> None:
        exporter = self.make_exporter()
        processor = self.make_processor(exporter) if exporter is not None else None
        self.provider = build_provider(self.config, processor, self.ids)
        self.tracer = self.provider.get_tracer("commons-router", build_info().version)
        users = self.config.user_baggage
        if users.enabled:
            key = users.hash_key.encode() if users.hash_key else os.urandom(32)
            if users.hash_key is None and users.pseudonymous:
                log = logger.info if self.services.dev_mode else logger.warning
                log(
                    "tracing: user_baggage.hash_key is not set; pseudonymous user ids use a "
                    "random key and change at restart and between replicas"
                )
            self.pseudonyms = Pseudonyms(key)
        if self.config.traceresponse:
            self.services.provide(TRACE_RESPONSE, _Responder())
        self.services.add_upstream_observer(self)
        logger.info(
            "tracing: exporter %s%s, sampling %.4g, propagators %s",
            self.config.exporter,
            f" to {self.config.endpoint or 'the OTEL_EXPORTER_OTLP_* default'}"
            if self.config.exporter.startswith("otlp")
            else "",
            self.config.sampling_ratio,
            ", ".join(self.config.propagators),
        )

    async def stop(self) -> None:
        provider = self.provider
        if provider is None:
            return
        # Flushing may wait on a dead collector: never on the event loop, never for long.
        task = asyncio.ensure_future(asyncio.to_thread(provider.shutdown))
        try:
            await asyncio.wait_for(asyncio.shield(task), self.config.export_timeout + 1)
        except TimeoutError:
            logger.warning("tracing: the exporter did not finish in time; spans may be lost")

    # -- server span -----------------------------------------------------------------

    def global_middleware(self) -> Middleware:
        tracer = self.tracer
        assert tracer is not None
        propagator = self.propagator
        trusted = self.trusted
        reserved = self.reserved
        record_query = self.config.record_query
        send_traceresponse = self.config.traceresponse
        code_attributes = self.code_attributes
        ids = self.ids
        bound = root_sampling_bound(self.config.sampling_ratio)
        unrecorded_flags = f"{int(_UNRECORDED):02x}"
        take_hex = RANDOM_HEX.take

        def add_traceresponse(request: web.BaseRequest, response: web.StreamResponse) -> None:
            response.headers["traceresponse"] = request[TRACE_KEY].traceresponse

        async def tracing(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            ctx = context_of(request)
            headers = request.headers
            links: list[Link] | None = None
            inbound = has_propagation_headers(headers)
            if not inbound:
                parent = _EMPTY
            elif trusted.trusts(request.remote or ""):
                parent = without_keys(propagator.extract(headers), reserved)
            else:
                # SECURITY: a new trace at the edge; the caller's id is only a link, its
                # sampling flag and baggage are ignored.
                parent = _EMPTY
                caller = get_current_span(propagator.extract(headers)).get_span_context()
                if caller.is_valid:
                    links = [Link(caller, _UNTRUSTED_LINK)]
            route = ctx.route
            method = request.method
            span: Span | None = None
            if parent is _EMPTY or not get_current_span(parent).get_span_context().is_valid:
                # A trace id (16 bytes) and a span id (8) as hex, from the OS generator:
                # ids an observer of earlier ones cannot predict.
                drawn = take_hex(24)
                trace_hex, span_hex = drawn[:32], drawn[32:]
                while trace_hex == _ZERO_TRACE_ID or span_hex == _ZERO_SPAN_ID:  # invalid ids
                    drawn = take_hex(24)
                    trace_hex, span_hex = drawn[:32], drawn[32:]
                # The ratio rule reads the low 64 bits only.
                if root_is_sampled(int(trace_hex[16:], 16), bound):
                    ids.preset = int(trace_hex, 16)  # the SDK starts it with this id
                else:
                    # What the SDK would make, without its cost: most requests go here.
                    state = RequestTrace(
                        None,
                        parent,
                        f"00-{trace_hex}-{span_hex}-{unrecorded_flags}",
                        inbound,
                        False,
                    )
                    request[TRACE_KEY] = state
                    ctx.add_log_field("trace_id", trace_hex)
                    if send_traceresponse:
                        ctx.on_response(add_traceresponse)
                    return await handler(request)
            if span is None:
                span = tracer.start_span(
                    method if route is None else f"{method} {route.path}",
                    context=parent,
                    kind=SpanKind.SERVER,
                    links=links,
                )
                ids.preset = 0  # used by now; never let it leak to another trace
            span_context = span.get_span_context()
            trace_id = format(span_context.trace_id, "032x")
            recording = span.is_recording()
            state = RequestTrace(
                span,
                parent,
                f"00-{trace_id}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}",
                inbound,
                recording,
            )
            request[TRACE_KEY] = state
            ctx.add_log_field("trace_id", trace_id)
            if send_traceresponse:
                ctx.on_response(add_traceresponse)
            if recording:
                span.set_attributes(server_attributes(request, ctx, record_query))
            try:
                response = await handler(request)
            except BaseException as exc:
                if recording:
                    span.set_attribute("error.type", type(exc).__qualname__)
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
                raise
            if recording:
                status = response.status
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_attribute("error.type", str(status))
                    span.set_status(Status(StatusCode.ERROR))
                endpoint = ctx.endpoint
                if endpoint is not None:
                    span.set_attributes(code_attributes.of(endpoint.version))
                    span.set_attribute("commons_router.upstream", endpoint.url)
            span.end()
            return response

        return tracing

    # -- client spans (UpstreamObserver) -------------------------------------------------

    def attempt_started(
        self, request: web.BaseRequest, endpoint_url: str, headers: CIMultiDict[str]
    ) -> object:
        tracer = self.tracer
        try:
            state = request[TRACE_KEY]
        except KeyError:
            state = None
        if state is None or tracer is None:
            clear_propagation_headers(headers)
            return None
        if state.inbound:
            clear_propagation_headers(headers)
        ctx = context_of(request)
        if not state.recording:
            # Nothing of this trace is recorded: a client span would only be a new id, so
            # the upstream continues the (unrecorded) server span directly.
            if self._w3c_baggage is None:
                self.propagator.inject(headers, context=self._with_user(ctx, state.context))
            else:
                self._inject_w3c(headers, ctx, state)
            return None
        method = request.method
        span = tracer.start_span(method, context=state.context, kind=SpanKind.CLIENT)
        if span.is_recording():
            span.set_attributes(self._endpoint_attributes(endpoint_url))
            span.set_attributes(method_attributes(method))
            span.set_attribute("url.full", endpoint_url.rstrip("/") + ctx.path)
            endpoint = ctx.endpoint
            if endpoint is not None:
                span.set_attributes(self.code_attributes.of(endpoint.version))
        context = self._with_user(ctx, set_span_in_context(span, state.context))
        self.propagator.inject(headers, context=context)
        return span

    def attempt_finished(self, token: object, status: int | None, error: str | None) -> None:
        # None (nothing recorded) is the common case: skip the ABC isinstance check for it.
        if token is None or not isinstance(token, Span):
            return
        if token.is_recording():
            if status is not None:
                token.set_attribute("http.response.status_code", status)
            if error is not None or (status is not None and status >= 500):
                token.set_attribute("error.type", error or str(status))
                token.set_status(Status(StatusCode.ERROR))
        token.end()

    def _inject_w3c(
        self, headers: CIMultiDict[str], ctx: RequestContext, state: RequestTrace
    ) -> None:
        headers["traceparent"] = state.traceresponse
        if state.inbound:  # only a trusted caller's context can carry tracestate or baggage
            trace_state = state.span.get_span_context().trace_state
            if trace_state:
                headers["tracestate"] = trace_state.to_header()
        if self._w3c_baggage is _NO_BAGGAGE:
            return
        if state.inbound or self._has_user(ctx):
            assert self._w3c_baggage is not None
            self._w3c_baggage.inject(headers, context=self._with_user(ctx, state.context))

    def _endpoint_attributes(self, endpoint_url: str) -> Mapping[str, Any]:
        known = self._endpoints.get(endpoint_url)
        if known is None:
            url = URL(endpoint_url)
            known = {"server.address": url.host or "", "server.port": url.port or 0}
            self._endpoints[endpoint_url] = known
        return known

    def _has_user(self, ctx: RequestContext) -> bool:
        """Whether :meth:`_with_user` would add anything to the baggage."""
        fields = ctx.log_fields
        if (
            self.pseudonyms is None
            or not fields
            or not self._sends_baggage
            or self._user_fields.isdisjoint(fields)
        ):
            return False
        for field, _key in self._user_pairs:
            value = fields.get(field)
            if value is not None and value != "":
                return True
        return False

    def _with_user(self, ctx: RequestContext, context: Context) -> Context:
        """Add the authenticated user's (pseudonymous) ids to the baggage sent upstream."""
        pseudonyms = self.pseudonyms
        fields = ctx.log_fields
        if pseudonyms is None or not fields or not self._sends_baggage:
            return context
        users = self.config.user_baggage
        for field, key in self._user_pairs:
            value = fields.get(field)
            if value is None or value == "":
                continue
            identity = str(value)
            context = baggage.set_baggage(
                key, pseudonyms.of(identity) if users.pseudonymous else identity, context
            )
        return context
