"""Reading and writing trace context: which formats, whom to believe, what baggage passes.

SECURITY: a client could otherwise pick its trace id, force sampling (load on the
collector) or claim an identity through baggage. Context is continued only from configured
peers; the reserved identity keys are removed from everyone's baggage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from urllib.parse import quote

from multidict import CIMultiDict
from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.jaeger import JaegerPropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Setter,
    TextMapPropagator,
    default_setter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from router_plugins.tracing.settings import Propagator

# Every header any supported format uses: cleared from upstream requests before ours are
# written, so a client's values never reach a backend next to (or instead of) ours.
PROPAGATION_HEADERS = (
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "uber-trace-id",
)
JAEGER_BAGGAGE_PREFIX = "uberctx-"
W3C_FORMATS = frozenset({"tracecontext", "baggage"})


# Characters left as they are in baggage values: W3C baggage-octets minus "%" and "+"
# ("+" is encoded so that decoders that read it as a space, like the SDK's, agree).
_BAGGAGE_SAFE = "!#$&'()*-./:<=>?@[]^_`{|}~"


class W3CBaggage(W3CBaggagePropagator):
    """The SDK's W3C baggage propagator, but writing values percent-encoded as the W3C
    spec says (the SDK writes a space as "+", which other implementations keep as "+")."""

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        entries = baggage.get_all(context)
        if not entries:
            return
        value = ",".join(
            f"{quote(str(key), safe=_BAGGAGE_SAFE)}={quote(str(item), safe=_BAGGAGE_SAFE)}"
            for key, item in entries.items()
        )
        setter.set(carrier, "baggage", value)


def build_propagator(names: Sequence[Propagator]) -> TextMapPropagator:
    factories: dict[str, type[TextMapPropagator]] = {
        "tracecontext": TraceContextTextMapPropagator,
        "baggage": W3CBaggage,
        "b3": B3SingleFormat,
        "b3multi": B3MultiFormat,
        "jaeger": JaegerPropagator,
    }
    return CompositePropagator([factories[name]() for name in names])


def without_keys(context: Context, keys: frozenset[str]) -> Context:
    """``context`` minus the baggage entries named in ``keys``."""
    entries = baggage.get_all(context)
    if not entries or keys.isdisjoint(entries):
        return context
    for key in keys.intersection(entries):
        context = baggage.remove_baggage(key, context)
    return context


_PROPAGATION_NAMES = frozenset(PROPAGATION_HEADERS)


def has_propagation_headers(headers: Iterable[str]) -> bool:
    """Whether a request carries any trace-context or baggage header (one pass)."""
    for name in headers:
        lower = name.lower()
        if lower in _PROPAGATION_NAMES or lower.startswith(JAEGER_BAGGAGE_PREFIX):
            return True
    return False


def clear_propagation_headers(headers: CIMultiDict[str]) -> None:
    for name in PROPAGATION_HEADERS:
        if name in headers:
            del headers[name]
    jaeger = [name for name in headers if name.lower().startswith(JAEGER_BAGGAGE_PREFIX)]
    for name in jaeger:
        headers.popall(name, None)


class Pseudonyms:
    """Keyed hashes of identities: stable per key, not reversible without it."""

    __slots__ = ("_cache", "_key")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._cache: dict[str, str] = {}

    def of(self, identity: str) -> str:
        known = self._cache.get(identity)
        if known is None:
            digest = hmac.new(self._key, identity.encode(), hashlib.sha256).digest()[:16]
            known = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
            if len(self._cache) >= 65536:
                self._cache.clear()
            self._cache[identity] = known
        return known
