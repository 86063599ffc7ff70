"""Certificates for TLS tests: a self-signed one (openssl) and test CAs (P-256)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def self_signed(directory: Path) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` into ``directory``; return their paths."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class TestCA:
    """A certificate authority for tests: issues leaf certificates for chosen names."""

    __test__ = False

    def __init__(self, name: str = "commons-router test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        *names: str,
        common_name: str | None = None,
        days: float = 30,
        valid_from_days: float = -1,
        client: bool = False,
    ) -> tuple[bytes, bytes]:
        """(chain PEM, key PEM) for a leaf with ``names`` as DNS SANs (none: no SAN)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cn = common_name or (names[0] if names else "no-san")
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=valid_from_days))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
        leaf = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        chain = leaf.public_bytes(serialization.Encoding.PEM) + self.pem
        return chain, key_pem

    def write(self, directory: Path, stem: str, *names: str, **options: Any) -> tuple[Path, Path]:
        chain, key = self.issue(*names, **options)
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(chain)
        key_path.write_bytes(key)
        return cert_path, key_path

    def spki_hash(self, chain_pem: bytes) -> str:
        """Base64 SHA-256 of a leaf's public key, for Chromium's SPKI trust list."""
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        der = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


def served_certificate(port: int, server_name: str | None, ca: TestCA) -> x509.Certificate:
    """Handshake with 127.0.0.1:port sending ``server_name`` as SNI (None: no SNI), trusting
    ``ca`` (host name not checked); the leaf certificate served. Raises ``ssl.SSLError``
    when the handshake is refused."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=ca.pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def served_names(port: int, server_name: str | None, ca: TestCA) -> list[str]:
    """The DNS names (SAN) of the certificate served for ``server_name``."""
    leaf = served_certificate(port, server_name, ca)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.DNSName))


def served_common_name(port: int, server_name: str, ca: TestCA) -> str | None:
    """The subject CN of the certificate served for ``server_name``; None if refused."""
    try:
        leaf = served_certificate(port, server_name, ca)
    except (ssl.SSLError, ConnectionError):
        return None
    return str(leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
