"""Certificates by host name, for the SNI callback: a dictionary hit, never a scan.

Each source (a file pair, a Kubernetes Secret) holds at most one certificate. A source
whose new content is broken keeps its last good certificate, and the problem is shown
on /routes and logged once. The names a certificate answers for come only from its SAN.
When two certificates claim a name, the one that expires last serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator

from router.tls.certificate import Certificate, CertificateError, parse_certificate

logger = logging.getLogger("commons_router.tls")

MakeContext = Callable[[], ssl.SSLContext]
# Private keys pass through a file (mode 0600 in a 0700 directory) only for an instant:
# in memory where the system offers it.
_MEMORY_DIRECTORY = "/dev/shm"  # noqa: S108


class CertificateStore:
    def __init__(
        self,
        *,
        policies: dict[str, MakeContext],
        default_name: str | None = None,
        fallback_source: str | None = None,
        expiry_warning: float = 14 * 86400.0,
    ) -> None:
        self._policies = policies
        self._default_name = default_name
        self._fallback_source = fallback_source
        self._expiry_warning = expiry_warning
        self._by_source: dict[str, Certificate] = {}
        self._claims: dict[str, list[Certificate]] = {}
        self._exact: dict[str, Certificate] = {}
        self._wildcard: dict[str, Certificate] = {}
        """``*.example.com`` is kept under ``example.com``."""
        self.problems: dict[str, str] = {}
        memory = _MEMORY_DIRECTORY if os.access(_MEMORY_DIRECTORY, os.W_OK) else None
        self._scratch = tempfile.mkdtemp(prefix="commons-router-tls-", dir=memory)

    # -- the hot path ---------------------------------------------------------------

    def lookup(self, server_name: str) -> Certificate | None:
        """The certificate whose SAN covers ``server_name`` most specifically."""
        found = self._exact.get(server_name)
        if found is None:
            found = self._wildcard.get(server_name.partition(".")[2])
        return found

    def default(self) -> Certificate | None:
        """For clients without SNI or with a name no certificate covers."""
        name = self._default_name
        if name is not None:
            return self._wildcard.get(name[2:]) if name.startswith("*.") else self.lookup(name)
        if self._fallback_source is not None:
            return self._by_source.get(self._fallback_source)
        return None

    # -- sources ----------------------------------------------------------------------

    def put(self, source: str, chain_pem: bytes, key_pem: bytes) -> bool:
        """Load a source's new content; False (and a problem) when it cannot be served."""
        try:
            certificate = parse_certificate(source, chain_pem, key_pem)
        except CertificateError as exc:
            self.fail(source, str(exc))
            return False
        previous = self._by_source.get(source)
        if previous is not None and previous.fingerprint == certificate.fingerprint:
            self._clear_problem(source)
            return False
        self._unindex(previous)
        self._by_source[source] = certificate
        self._index(certificate)
        self._clear_problem(source)
        logger.debug(
            "certificate %s loaded from %s (expires %s)",
            ", ".join(certificate.names),
            source,
            certificate.describe()["not_after"],
        )
        self._warn_if_expiring(certificate, time.time())
        return True

    def fail(self, source: str, message: str) -> None:
        """Record why a source cannot be served; its last good certificate stays."""
        keeping = " (the previous certificate keeps serving)" if source in self._by_source else ""
        if self.problems.get(source) != message:
            logger.error("certificate %s rejected: %s%s", source, message, keeping)
        self.problems[source] = message

    def remove(self, source: str) -> None:
        self._unindex(self._by_source.pop(source, None))
        if self.problems.pop(source, None) is None:
            logger.info("certificate source %s removed", source)

    def certificates(self) -> list[Certificate]:
        return sorted(self._by_source.values(), key=lambda c: c.source)

    # -- expiry ----------------------------------------------------------------------

    def check_expiry(self, now: float | None = None) -> None:
        """Warn once per certificate that expires soon; flag the expired ones."""
        moment = time.time() if now is None else now
        for certificate in self._by_source.values():
            if certificate.not_after <= moment:
                self.fail(certificate.source, "the certificate has expired")
            else:
                self._warn_if_expiring(certificate, moment)

    async def check_expiry_hourly(self) -> None:
        while True:
            await asyncio.sleep(3600.0)
            self.check_expiry()

    def _warn_if_expiring(self, certificate: Certificate, now: float) -> None:
        left = certificate.not_after - now
        if left < self._expiry_warning and not certificate.warned:
            certificate.warned = True
            logger.warning(
                "certificate %s from %s expires in %.1f days",
                ", ".join(certificate.names),
                certificate.source,
                left / 86400,
            )

    def metric_lines(self) -> Iterator[str]:
        yield (
            "# HELP commons_router_tls_certificate_expiry_timestamp_seconds "
            "When the certificate serving each host name expires.\n"
        )
        yield "# TYPE commons_router_tls_certificate_expiry_timestamp_seconds gauge\n"
        for name, certificate in sorted(self._exact.items()):
            yield _expiry_line(name, certificate)
        for parent, certificate in sorted(self._wildcard.items()):
            yield _expiry_line("*." + parent, certificate)

    # -- internals ----------------------------------------------------------------------

    def context(self, certificate: Certificate, policy: str) -> ssl.SSLContext | None:
        """The certificate's context for a listener policy, made at its first handshake.

        Made on demand: OpenSSL 3.0 takes ~3 ms to load a key, which for thousands of
        certificates would hold up start-up (and their memory) for names never asked for.
        """
        context = certificate.contexts.get(policy)
        if context is not None:
            return context
        try:
            context = self._load(certificate, self._policies[policy])
        except CertificateError as exc:
            self.fail(certificate.source, str(exc))
            return None
        certificate.contexts[policy] = context
        return context

    def _load(self, certificate: Certificate, make: MakeContext) -> ssl.SSLContext:
        # ssl loads keys only from files: write one to a private directory (in memory
        # where the system has /dev/shm) and remove it at once.
        descriptor, path = tempfile.mkstemp(dir=self._scratch)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(certificate.pem)
            context = make()
            context.load_cert_chain(path)
            return context
        except ssl.SSLError as exc:
            raise CertificateError(f"OpenSSL refused the certificate: {exc.reason}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _clear_problem(self, source: str) -> None:
        if self.problems.pop(source, None) is not None:
            logger.info("certificate %s is good again", source)

    def _index(self, certificate: Certificate) -> None:
        for name in certificate.names:
            self._claims.setdefault(name, []).append(certificate)
            self._reelect(name)

    def _unindex(self, certificate: Certificate | None) -> None:
        if certificate is None:
            return
        for name in certificate.names:
            claims = self._claims.get(name, [])
            if certificate in claims:
                claims.remove(certificate)
            if not claims:
                self._claims.pop(name, None)
            self._reelect(name)

    def _reelect(self, name: str) -> None:
        claims = self._claims.get(name)
        index, key = (self._wildcard, name[2:]) if name.startswith("*.") else (self._exact, name)
        if not claims:
            index.pop(key, None)
            return
        index[key] = max(claims, key=lambda c: (c.not_after, c.source))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self._scratch)


def _expiry_line(name: str, certificate: Certificate) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'commons_router_tls_certificate_expiry_timestamp_seconds{{host="{escaped}"}} '
        f"{int(certificate.not_after)}\n"
    )
