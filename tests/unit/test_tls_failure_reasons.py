"""OpenSSL's handshake errors map onto a small fixed set of metric labels."""

from __future__ import annotations

import ssl

import pytest

from router.tls.listener import failure_reason


def error(reason: str | None) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] test")
    exc.reason = reason  # type: ignore[assignment]
    return exc


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("UNSUPPORTED_PROTOCOL", "protocol_version"),
        ("TLSV1_ALERT_PROTOCOL_VERSION", "protocol_version"),
        ("NO_SHARED_CIPHER", "no_shared_cipher"),
        ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "client_certificate"),
        ("CERTIFICATE_VERIFY_FAILED", "client_certificate"),
        ("HTTP_REQUEST", "not_tls"),
        ("WRONG_VERSION_NUMBER", "not_tls"),
        ("TLSV1_ALERT_UNKNOWN_CA", "client_alert"),
        ("SSLV3_ALERT_BAD_CERTIFICATE", "client_alert"),
        ("UNEXPECTED_MESSAGE", "other"),
        ("made up by an attacker", "other"),
        (None, "other"),
    ],
)
def test_reasons_are_a_fixed_set(reason: str | None, label: str) -> None:
    assert failure_reason(error(reason)) == label
