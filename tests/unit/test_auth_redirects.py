"""Return-URL validation (login ``rd``, logout ``rd``)."""

from __future__ import annotations

import pytest

from router_plugins.auth.redirects import safe_return_url

ALLOWED = ["docs.example.org", "tools.example.org:8443"]


def check(target: str, scheme: str = "https", host: str = "app.example.org") -> str | None:
    return safe_return_url(target, scheme=scheme, host=host, allowed_hosts=ALLOWED)


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/reports?id=7",
        "/a/b#frag",
        "https://app.example.org/x",
        "https://app.example.org:443/x",
        "https://docs.example.org/guide",
        "https://tools.example.org:8443/",
        "/caf%C3%A9",
    ],
)
def test_accepted(target: str) -> None:
    assert check(target) == target


@pytest.mark.parametrize(
    "target",
    [
        "",
        "//evil.test",
        "//evil.test/path",
        "/\\evil.test",
        "\\\\evil.test",
        "/\t/evil.test",
        "/%09/evil.test",
        "/%0a/evil.test",
        "/%2F/evil.test",
        "/%2f%2fevil.test",
        "/%5Cevil.test",
        "/ /evil.test",
        "https://evil.test/",
        "https://docs.example.org.evil.test/",
        "https://evil.test/docs.example.org",
        "https://docs.example.org@evil.test/",
        "https://user:pw@docs.example.org/",
        "https://docs.example.org:8443/",
        "https://tools.example.org/",
        "http://app.example.org/",
        "ftp://app.example.org/",
        "javascript:alert(1)",
        "evil.test/x",
        "app.example.org/x",
        "https:/evil.test",
        "https:evil.test",
        "/x\r\nSet-Cookie: a=b",
        "x" * 5000,
    ],
)
def test_refused(target: str) -> None:
    assert check(target) is None


def test_http_site_may_return_to_http_and_its_port() -> None:
    assert check("http://127.0.0.1:8080/x", scheme="http", host="127.0.0.1:8080") is not None
    assert check("http://127.0.0.1:9090/x", scheme="http", host="127.0.0.1:8080") is None
