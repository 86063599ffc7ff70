"""The signature base and signer against RFC 9421's own Ed25519 example, and the
provenance dictionary against an RFC 8941 parser."""

from __future__ import annotations

import base64

import http_sf
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import InvalidSignature

from router_plugins.provenance.fields import RecordCache, RouterCode, build_record
from router_plugins.provenance.signing import (
    Signer,
    load_private_key,
    params_suffix,
    public_jwk,
    sf_string,
    signature_base,
    signature_params,
)
from router_plugins.provenance.source import repository_url
from tests.support.signatures import keys_from_jwks, new_key_pem, verify_response

# RFC 9421 appendix B.1.4 (test-key-ed25519) and B.2.6 (signing a request using ed25519).
RFC_KEY = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----
"""
RFC_SIGNATURE = (
    "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
)


def test_rfc9421_ed25519_example_is_reproduced_exactly() -> None:
    components = [
        ('"date"', "Tue, 20 Apr 2021 02:07:55 GMT"),
        ('"@method"', "POST"),
        ('"@path"', "/foo"),
        ('"@authority"', "example.com"),
        ('"content-type"', "application/json"),
        ('"content-length"', "18"),
    ]
    suffix = params_suffix("test-key-ed25519", None, None)
    params = signature_params([c for c, _ in components], 1618884473, suffix)
    assert params == (
        '("date" "@method" "@path" "@authority" "content-type" "content-length")'
        ';created=1618884473;keyid="test-key-ed25519"'
    )
    base = signature_base(components, params)
    assert base.decode().splitlines()[-1] == f'"@signature-params": {params}'
    signature = load_private_key(RFC_KEY).sign(base)
    assert base64.b64encode(signature).decode() == RFC_SIGNATURE


def test_signer_gives_the_bytes_openssl_gives() -> None:
    # The Signer signs with libsodium; Ed25519 is deterministic, so it must match OpenSSL
    # (through cryptography) byte for byte, on the RFC's key and on a fresh one.
    # The long path outgrows the signer's output buffer; the short one after it is signed
    # in the grown buffer, with the long message's bytes still behind it.
    short = [('"@method"', "GET"), ('"@path"', "/foo")]
    long = [('"@method"', "GET"), ('"@path"', "/" + "a" * 20_000)]
    for key in (load_private_key(RFC_KEY), Ed25519PrivateKey.generate()):
        signer = Signer(key, "prov", "commons-router")
        for components in (short, long, short):
            signature_input, signature = signer.sign(components, 1618884473)
            params = signature_input.removeprefix("prov=")
            expected = key.sign(signature_base(components, params))
            assert signature == f"prov=:{base64.b64encode(expected).decode()}:"


def test_jwk_thumbprint_follows_rfc7638() -> None:
    # RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "="))
    jwk = public_jwk(key)
    assert jwk["x"] == x
    assert jwk["kid"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_signer_output_verifies_with_the_library_and_fails_when_tampered() -> None:
    pem, key = new_key_pem()
    signer = Signer(load_private_key(pem), "prov", "commons-router")
    keys = keys_from_jwks({"keys": [public_jwk(key.public_key())]})
    import time

    provenance = 'repo="https://example.org/app", commit="abc", router="1"'
    components = [
        ('"@status"', "200"),
        ('"provenance"', provenance),
        ('"x-request-id"', "r1"),
        ('"@method";req', "GET"),
        ('"@authority";req', "app.example"),
        ('"@path";req', "/a/b"),
    ]
    signature_input, signature = signer.sign(components, int(time.time()))
    headers = [
        ("Provenance", provenance),
        ("X-Request-Id", "r1"),
        ("Signature-Input", signature_input),
        ("Signature", signature),
    ]
    verify_response("GET", "http://app.example/a/b?q=1", 200, headers, keys)
    with pytest.raises(InvalidSignature):
        verify_response("GET", "http://app.example/a/c", 200, headers, keys)
    with pytest.raises(InvalidSignature):
        verify_response("GET", "http://app.example/a/b", 201, headers, keys)


def test_provenance_header_is_an_rfc8941_dictionary() -> None:
    record = build_record(
        {
            "repository": "https://github.com/org/app",
            "commit": 'we"ird\\',
            "dirty": "true",
            "image": "ghcr.io/org/app@sha256:aa",
            "node": "node-1",
            "pod": "app-7f9\u00e9",
        },
        "app",
        RouterCode("0.1.0", "c0ffee"),
        ("repository", "commit", "dirty", "image", "pod"),
    )
    parsed = http_sf.parse(record.header.encode(), tltype="dictionary")
    assert {k: v[0] for k, v in parsed.items()} == {
        "repo": "https://github.com/org/app",
        "commit": 'we"ird\\',
        "dirty": True,
        "image": "ghcr.io/org/app@sha256:aa",
        "pod": "app-7f9?",
        "route": "app",
        "router": "0.1.0",
        "router-commit": "c0ffee",
    }
    assert "node" not in record.fields  # not published unless configured


def test_records_are_cached_per_version_object() -> None:
    cache = RecordCache(RouterCode("0.1.0", "c0ffee"), ("commit",))
    version = {"commit": "a"}
    first = cache.get("app", version)
    assert cache.get("app", version) is first
    assert cache.get("app", {"commit": "b"}).fields["commit"] == "b"
    assert cache.get("other", version).fields["route"] == "other"


def test_router_image_digest_and_dirty_build_reach_records_built_before() -> None:
    digest = "sha256:" + "ab" * 32
    cache = RecordCache(RouterCode("0.1.0", "c0ffee", dirty=True), ("commit",))
    version = {"commit": "a"}
    before = cache.get("app", version)
    assert "router-image-digest" not in before.fields  # absent, not invented
    assert before.fields["router-dirty"] is True
    cache.set_router_image(digest)
    after = cache.get("app", version)
    parsed = http_sf.parse(after.header.encode(), tltype="dictionary")
    assert parsed["router-image-digest"][0] == digest
    assert parsed["router-dirty"][0] is True


@pytest.mark.parametrize(
    ("remote", "url"),
    [
        ("git@github.com:org/app.git", "https://github.com/org/app"),
        ("https://user:secret@gitlab.example/org/app.git", "https://gitlab.example/org/app"),
        ("ssh://git@codeberg.org/org/app.git", "https://codeberg.org/org/app"),
        ("https://github.com/org/app", "https://github.com/org/app"),
    ],
)
def test_repository_urls_are_browsable_and_carry_no_credentials(remote: str, url: str) -> None:
    assert repository_url(remote) == url


def test_sf_string_escapes() -> None:
    assert sf_string('a"b\\c\nd') == '"a\\"b\\\\c?d"'
