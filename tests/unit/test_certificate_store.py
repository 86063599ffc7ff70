"""The certificate store: names from SAN, exact before wildcard, conflicts, broken input."""

from __future__ import annotations

import ssl

import pytest

from router.config.models import ListenerTls
from router.tls.certificate import CertificateError, parse_certificate
from router.tls.listener import policy
from router.tls.store import CertificateStore
from tests.support.tls import TestCA


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def new_store(**options: object) -> CertificateStore:
    return CertificateStore(policies={"https": policy(ListenerTls())}, **options)  # type: ignore[arg-type]


def test_names_come_from_the_san_and_wildcards_cover_one_label(ca: TestCA) -> None:
    store = new_store()
    assert store.put("one", *ca.issue("*.example.com", "example.com", common_name="evil.test"))
    assert store.lookup("evil.test") is None  # the CN is not a name
    assert store.lookup("example.com") is not None
    assert store.lookup("a.example.com") is not None
    assert store.lookup("a.b.example.com") is None
    certificate = store.lookup("a.example.com")
    assert certificate is not None
    assert isinstance(store.context(certificate, "https"), ssl.SSLContext)


def test_exact_beats_wildcard_and_the_latest_expiry_wins_a_shared_name(ca: TestCA) -> None:
    store = new_store()
    store.put("wild", *ca.issue("*.example.com"))
    store.put("short", *ca.issue("www.example.com", days=10))
    store.put("long", *ca.issue("www.example.com", days=20))
    assert store.lookup("api.example.com").source == "wild"  # type: ignore[union-attr]
    assert store.lookup("www.example.com").source == "long"  # type: ignore[union-attr]
    store.remove("long")
    assert store.lookup("www.example.com").source == "short"  # type: ignore[union-attr]
    store.remove("short")
    assert store.lookup("www.example.com").source == "wild"  # type: ignore[union-attr]


def test_a_broken_update_keeps_the_last_good_certificate(ca: TestCA) -> None:
    store = new_store()
    store.put("site", *ca.issue("site.example"))
    good = store.lookup("site.example")
    chain, _ = ca.issue("site.example")
    assert not store.put("site", chain, ca.issue("site.example")[1])
    assert store.lookup("site.example") is good
    assert store.problems == {"site": "the private key does not match the certificate"}
    assert store.put("site", *ca.issue("site.example"))
    assert store.problems == {}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda ca: (b"garbage", b"garbage"), "not valid PEM"),
        (lambda ca: (ca.issue("x.example")[0], b"nope"), "private key is not valid"),
        (lambda ca: ca.issue("x.example", days=-1, valid_from_days=-2), "expired"),
        (lambda ca: ca.issue("x.example", valid_from_days=2, days=3), "not valid before"),
        (lambda ca: ca.issue(common_name="x.example"), "no DNS names"),
    ],
)
def test_broken_certificates_are_refused_with_a_reason(
    ca: TestCA, make: object, message: str
) -> None:
    chain, key = make(ca)  # type: ignore[operator]
    with pytest.raises(CertificateError, match=message):
        parse_certificate("x", chain, key)


def test_default_certificate_by_name(ca: TestCA) -> None:
    store = new_store(default_name="fallback.example")
    assert store.default() is None
    store.put("f", *ca.issue("fallback.example"))
    assert store.default() is store.lookup("fallback.example")


def test_expiry_is_warned_once_and_an_expired_certificate_is_a_problem(
    ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    store = new_store()
    store.put("site", *ca.issue("site.example", days=30))
    certificate = store.lookup("site.example")
    assert certificate is not None
    store.check_expiry(now=certificate.not_after - 20 * 86400)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    store.check_expiry(now=certificate.not_after - 10 * 86400)
    store.check_expiry(now=certificate.not_after - 9 * 86400)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "site.example" in warnings[0] and "10.0 days" in warnings[0]
    store.check_expiry(now=certificate.not_after + 1)
    assert store.problems == {"site": "the certificate has expired"}
