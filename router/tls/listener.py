"""A TLS listener: its policy, the SNI callback that picks a certificate, handshake counts.

SECURITY: TLS 1.2 at least (1.3 only by setting), forward-secret AEAD ciphers only, no
compression, ALPN offers ``http/1.1`` alone (clients never try h2 on a connection that
would not speak it).

Sessions resume from stateless tickets (TLS 1.3 and 1.2) whose key is rotated: Python
cannot set a ticket key, but OpenSSL draws a random one for each new SSLContext and seals
and opens tickets with the key of the context the connection was created from (the one
before the SNI switch). So each listener creates connections from a context it replaces
every ``session_ticket_lifetime``: tickets sealed with a replaced key no longer open, and a
leaked key decrypts at most one period's resumed sessions.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any
from urllib.parse import quote

from cryptography import x509

from router.config.models import ListenerTls
from router.http.protocol import GuardedRequestHandler, GuardedServer
from router.tls.store import CertificateStore, MakeContext

logger = logging.getLogger("commons_router.tls")

MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_SUBJECT_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def policy(settings: ListenerTls) -> MakeContext:
    """A function making a server context with this listener's policy (no certificate)."""
    ca_text: str | None = None
    client = settings.client_certificates
    if client is not None:
        with open(client.ca, encoding="ascii") as handle:
            ca_text = handle.read()
        # Fail now, with the file named, rather than at the first handshake.
        ssl.create_default_context(cadata=ca_text)

    def make() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = (
            ssl.TLSVersion.TLSv1_3 if settings.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        )
        context.set_ciphers(MODERN_CIPHERS)
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
        context.set_alpn_protocols(["http/1.1"])
        if client is not None and ca_text is not None:
            # Each certificate's context verifies clients too: after the SNI switch,
            # OpenSSL verifies with the switched-to context's trust store.
            context.verify_mode = (
                ssl.CERT_REQUIRED if client.mode == "required" else ssl.CERT_OPTIONAL
            )
            context.load_verify_locations(cadata=ca_text)
        return context

    return make


HANDSHAKE_DEADLINE = 61.0
"""A TLS connection not handshaken this long after accept never will be: the event loop's
handshake timeout (60 s) has ended it."""


class HandshakeCounts:
    """Handshakes per listener: completed, failed (with a reason), and every accepted
    connection whose handshake never completed (failed ones included)."""

    def __init__(self) -> None:
        self.completed: dict[str, int] = {}
        self.failed: dict[tuple[str, str], int] = {}
        self.unfinished: dict[str, int] = {}

    def fail(self, listener: str, reason: str) -> None:
        key = (listener, reason)
        self.failed[key] = self.failed.get(key, 0) + 1

    def metric_lines(self) -> list[str]:
        lines = [
            "# HELP commons_router_tls_handshakes_total Completed TLS handshakes, by listener.\n",
            "# TYPE commons_router_tls_handshakes_total counter\n",
        ]
        lines += [
            f'commons_router_tls_handshakes_total{{listener="{name}"}} {count}\n'
            for name, count in sorted(self.completed.items())
        ]
        lines += [
            "# HELP commons_router_tls_handshake_failures_total "
            "Failed TLS handshakes, by listener and reason.\n",
            "# TYPE commons_router_tls_handshake_failures_total counter\n",
        ]
        lines += [
            f'commons_router_tls_handshake_failures_total{{listener="{name}",reason="{why}"}} '
            f"{count}\n"
            for (name, why), count in sorted(self.failed.items())
        ]
        lines += [
            "# HELP commons_router_tls_handshakes_unfinished_total Accepted TLS connections "
            "whose handshake never completed (failed, also counted by reason in "
            "commons_router_tls_handshake_failures_total; or the client left), counted "
            f"{HANDSHAKE_DEADLINE:.0f} s after accept.\n",
            "# TYPE commons_router_tls_handshakes_unfinished_total counter\n",
        ]
        lines += [
            f'commons_router_tls_handshakes_unfinished_total{{listener="{name}"}} {count}\n'
            for name, count in sorted(self.unfinished.items())
        ]
        return lines


class ListenerContext(ssl.SSLContext):
    """The context a listener's server holds: it creates each connection from the current
    rotating context, so a replaced context (and its ticket key) serves no new handshake."""

    current: ssl.SSLContext

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.current.wrap_bio(incoming, outgoing, server_side, server_hostname, session)


class CountedHandshake(ssl.SSLObject):
    """A server connection whose failed handshake is counted with OpenSSL's reason, at the
    moment it fails (the event loop itself reports it to nobody)."""

    refusal: str | None = None
    """Set by the SNI callback when the router itself refused the handshake."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            self.failed(self.refusal or failure_reason(exc))
            raise

    def failed(self, reason: str) -> None:
        raise NotImplementedError


_REASONS = {
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "WRONG_SSL_VERSION": "protocol_version",
    "VERSION_TOO_LOW": "protocol_version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "NO_CIPHERS_AVAILABLE": "no_shared_cipher",
    "NO_SHARED_GROUPS": "no_shared_cipher",
    "NO_SUITABLE_KEY_SHARE": "no_shared_cipher",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no_shared_cipher",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "client_certificate",
    "CERTIFICATE_VERIFY_FAILED": "client_certificate",
    "NO_CERTIFICATES_RETURNED": "client_certificate",
    "WRONG_VERSION_NUMBER": "not_tls",
    "HTTP_REQUEST": "not_tls",
    "HTTPS_PROXY_REQUEST": "not_tls",
}
_CLIENT_ALERTS = ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")


def failure_reason(exc: ssl.SSLError) -> str:
    """The metric label for a handshake OpenSSL failed (a small fixed set)."""
    code = exc.reason or ""
    reason = _REASONS.get(code)
    if reason is not None:
        return reason
    # An alert the client sent: it refused something of ours (most often the certificate).
    return "client_alert" if code.startswith(_CLIENT_ALERTS) else "other"


class TlsListener:
    """The server context of one listener; SNI switches each handshake to a certificate."""

    def __init__(
        self, name: str, store: CertificateStore, make: MakeContext, counts: HandshakeCounts
    ) -> None:
        self.name = name
        self.store = store
        self.counts = counts
        self._make = make
        counts.completed.setdefault(name, 0)
        counts.unfinished.setdefault(name, 0)

        class ListenerHandshake(CountedHandshake):
            def failed(self, reason: str) -> None:
                counts.fail(name, reason)

        self._handshake_class = ListenerHandshake
        self.context = ListenerContext(ssl.PROTOCOL_TLS_SERVER)
        self.rotate()

    def rotate(self) -> None:
        """A new ticket key (and session cache) for new handshakes; connections made from
        the replaced context keep it until they close."""
        context = self._make()
        context.sni_callback = self._select
        context.sslobject_class = self._handshake_class
        self.context.current = context

    async def rotate_every(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            self.rotate()

    def _select(
        self, connection: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext
    ) -> int | None:
        certificate = None
        if server_name:
            certificate = self.store.lookup(server_name.lower())
        if certificate is None:
            certificate = self.store.default()
            if certificate is None:
                # SECURITY: never a certificate whose SAN does not cover the name asked for,
                # unless the operator chose a default certificate.
                _refuse(connection, "unknown_name" if server_name else "no_sni")
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        context = certificate.contexts.get(self.name) or self.store.context(certificate, self.name)
        if context is None:
            _refuse(connection, "certificate_unusable")
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        connection.context = context
        return None

    def server(self, *args: Any, **kwargs: Any) -> TlsServer:
        return TlsServer(*args, counts=self.counts, listener=self.name, **kwargs)


def _refuse(connection: ssl.SSLObject, reason: str) -> None:
    if isinstance(connection, CountedHandshake):
        connection.refusal = reason


class TlsServer(GuardedServer):
    """Connections of a TLS listener: counted once their handshake completes, and their
    verified client certificate subject read once."""

    def __init__(self, *args: Any, counts: HandshakeCounts, listener: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handshakes = counts
        self.listener = listener
        self.handler_class = TlsRequestHandler

    def watch_handshake(self) -> asyncio.TimerHandle:
        """Count the connection accepted now as unfinished unless cancelled in time.

        A timer, not the handler's lifetime: aiohttp's handler and parser refer to each
        other, so a dropped handler is only freed by a later garbage collection."""
        return self._loop.call_later(HANDSHAKE_DEADLINE, self._unfinished)

    def _unfinished(self) -> None:
        self.handshakes.unfinished[self.listener] += 1


class TlsRequestHandler(GuardedRequestHandler):
    """Made when a TCP connection is accepted; told of it only once the TLS handshake
    completed. One dropped without being told never finished its handshake."""

    __slots__ = ("_counts", "_handshake_deadline", "_listener", "client_subject")

    def __init__(self, manager: TlsServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._counts = manager.handshakes
        self._listener = manager.listener
        self._handshake_deadline = manager.watch_handshake()
        self.client_subject: str | None = None
        """The verified client certificate's subject (RFC 4514), if one was presented."""

    def connection_made(self, transport: Any) -> None:
        self._handshake_deadline.cancel()
        self._counts.completed[self._listener] += 1
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.client_subject = client_subject(ssl_object)
        super().connection_made(transport)


def client_subject(ssl_object: ssl.SSLObject) -> str | None:
    """The subject of the peer's certificate, which OpenSSL verified against the CA bundle,
    percent-encoded outside printable ASCII so it is always a safe header value."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return None
    return quote(subject, safe=_SUBJECT_SAFE)
