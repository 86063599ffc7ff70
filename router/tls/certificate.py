"""One PEM certificate chain and key, checked and described."""

from __future__ import annotations

import ssl
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


class CertificateError(ValueError):
    """Why a certificate cannot be served (the message is one log line)."""


class Certificate:
    """A checked certificate: the names it covers (from its SAN), and the PEM to serve.

    Compared by identity: a reloaded file is a new ``Certificate``.
    """

    __slots__ = (
        "contexts",
        "fingerprint",
        "issuer",
        "names",
        "not_after",
        "pem",
        "source",
        "subject",
        "warned",
    )

    def __init__(
        self,
        *,
        source: str,
        names: tuple[str, ...],
        subject: str,
        issuer: str,
        not_after: float,
        fingerprint: str,
        pem: bytes,
    ) -> None:
        self.source = source
        self.names = names
        self.subject = subject
        self.issuer = issuer
        self.not_after = not_after
        self.fingerprint = fingerprint
        self.pem = pem
        """Private key then chain, PEM: what an ``SSLContext`` loads."""
        self.contexts: dict[str, ssl.SSLContext] = {}
        """One context per listener policy, made by the store at the first handshake."""
        self.warned = False

    def describe(self) -> dict[str, object]:
        return {
            "source": self.source,
            "names": list(self.names),
            "subject": self.subject,
            "issuer": self.issuer,
            "not_after": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.not_after)),
            "sha256": self.fingerprint,
        }


def parse_certificate(
    source: str, chain_pem: bytes, key_pem: bytes, *, now: float | None = None
) -> Certificate:
    """Check a chain and key; raise :class:`CertificateError` saying what is wrong."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise CertificateError("the certificate is not valid PEM") from None
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateError("the private key is not valid unencrypted PEM") from None
    leaf = chain[0]
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise CertificateError("the private key does not match the certificate")
    moment = time.time() if now is None else now
    not_after = leaf.not_valid_after_utc.timestamp()
    if not_after <= moment:
        raise CertificateError(f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    if leaf.not_valid_before_utc.timestamp() > moment + 300:
        raise CertificateError(
            f"the certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M}"
        )
    names = san_names(leaf)
    if not names:
        raise CertificateError("the certificate has no DNS names in its subjectAltName")
    key_text = key_pem if key_pem.endswith(b"\n") else key_pem + b"\n"
    return Certificate(
        source=source,
        names=names,
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        not_after=not_after,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
        pem=key_text + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
    )


def san_names(leaf: x509.Certificate) -> tuple[str, ...]:
    """The DNS names of the subjectAltName, lowercased; wildcards only as a whole first label.

    SECURITY: names come from the certificate, never from configuration text, so a
    certificate is only ever offered for names it can prove.
    """
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    names: list[str] = []
    for raw in extension.value.get_values_for_type(x509.DNSName):
        name = raw.strip().lower().rstrip(".")
        rest = name[2:] if name.startswith("*.") else name
        if not rest or "*" in rest or ("." not in rest and name.startswith("*.")):
            continue
        if name not in names:
            names.append(name)
    return tuple(names)


def _public_der(public_key: object) -> bytes:
    encode = getattr(public_key, "public_bytes", None)
    if encode is None:
        return b""
    der: bytes = encode(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der
