"""``provenance``: say — and sign — which code produced every response.

For each response the router adds a header (``Provenance`` by default) with an RFC 8941
dictionary of the endpoint's code version (repository, commit, image …), the route and the
router's own version, writes the same into the access-log line, and signs it with an
RFC 9421 HTTP message signature (Ed25519) bound to the request (method, authority, path),
the request id and, with the tracing plugin, the ``traceresponse``. Public keys are served
as a JWKS at ``/.well-known/commons-router/provenance-keys``; a human page at
``/.well-known/commons-router/provenance``.
"""

from router_plugins.provenance.page import KEYS_PATH, PAGE_PATH
from router_plugins.provenance.plugin import ProvenancePlugin
from router_plugins.provenance.settings import ProvenanceConfig

__all__ = ["KEYS_PATH", "PAGE_PATH", "ProvenanceConfig", "ProvenancePlugin"]
