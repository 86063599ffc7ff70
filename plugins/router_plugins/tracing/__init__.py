"""``tracing``: an OpenTelemetry server span per request, a client span per upstream
attempt, trace context read from trusted callers and written to upstreams, the trace id in
a ``traceresponse`` header, and the authenticated user as pseudonymous baggage.
"""

from router_plugins.tracing.plugin import TracingPlugin
from router_plugins.tracing.settings import TracingConfig

__all__ = ["TracingConfig", "TracingPlugin"]
