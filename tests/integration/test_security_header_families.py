"""Header families a client must never get to a backend: identity, URL overrides, and
client-address claims from untrusted peers.

Names are generated (hypothesis, derandomized, bounded) from each family with random
casing and ``_`` for ``-``, sent over raw sockets so they arrive exactly as spelled, and the
backend is asked what it received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.testing import RunningRouter, run_router
from tests.support.rawhttp import RecordingBackend, exchange, recording_backend, request_bytes

PREFIXES = ("X-Auth-Request-", "Remote-", "X-Remote-")
ALWAYS_REMOVED = (
    "X-Auth-User",
    "X-Commons-Identity",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Access-Token",
    "X-Configured-Identity",
)
CLIENT_ADDRESS = ("True-Client-IP", "X-Original-Forwarded-For", "X-Client-IP")
FAMILY_NAMES = {name.lower() for name in (*ALWAYS_REMOVED, *CLIENT_ADDRESS)}


def in_a_family(canonical: str) -> bool:
    return canonical in FAMILY_NAMES or canonical.startswith(
        tuple(prefix.lower() for prefix in PREFIXES)
    )


suffixes = st.from_regex(r"\A[A-Za-z][A-Za-z0-9]{0,7}(-[A-Za-z0-9]{1,5}){0,2}\Z")
base_names = st.one_of(
    st.sampled_from(PREFIXES).flatmap(lambda prefix: suffixes.map(lambda rest: prefix + rest)),
    st.sampled_from((*ALWAYS_REMOVED, *CLIENT_ADDRESS)),
)


@st.composite
def spelled(draw: st.DrawFn) -> str:
    """A family name with each letter's case and each ``-`` (``_`` or not) drawn."""
    name = draw(base_names)
    out = []
    for char in name:
        if char == "-":
            out.append(draw(st.sampled_from("-_")))
        elif char.isalpha():
            out.append(char.upper() if draw(st.booleans()) else char.lower())
        else:
            out.append(char)
    return "".join(out)


def auth_config(url: str, *, dev: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "plugins": [
            {"name": "sessions"},
            {
                "name": "auth",
                "config": {
                    "dev_login": dev,
                    "default": {"policy": "public"},
                    "identity_headers": {"claims": {"team": "X-Configured-Identity"}},
                },
            },
        ],
        "routes": [{"name": "app", "upstreams": [{"url": url}]}],
        **extra,
    }


@pytest.fixture(params=["serve", "dev"])
async def router_and_backend(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[RunningRouter, RecordingBackend]]:
    async with recording_backend("app") as (seen, backend):
        dev = request.param == "dev"
        async with run_router(auth_config(backend.url, dev=dev), dev_mode=dev) as router:
            yield router, seen


@settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(names=st.lists(spelled(), min_size=1, max_size=6))
async def test_no_generated_family_name_reaches_the_backend(
    router_and_backend: tuple[RunningRouter, RecordingBackend], names: list[str]
) -> None:
    router, seen = router_and_backend
    headers = [(name, "SPOOF") for name in names]
    result = await exchange(router.port, request_bytes("GET", "/whoami", headers))
    assert result.statuses == [200], result.data
    received = seen.requests[-1]
    leaked = {name for name in received.header_names() if in_a_family(name)}
    assert not leaked, f"sent {names!r}, the backend got {leaked!r}"
    assert all(value != "SPOOF" for _, value in received.headers)


@pytest.mark.parametrize(
    "name",
    [
        "X-Auth-Request-Preferred-Username",
        "X_AUTH_REQUEST_PREFERRED_USERNAME",
        "X-Auth-User",
        "Remote-Groups",
        "Remote-Email",
        "remote_name",
        "X-Remote-Groups",
        "X-Original-URL",
        "x_rewrite_url",
        "True-Client-IP",
        "X-Original-Forwarded-For",
        "X-Commons-Identity",
    ],
)
async def test_the_reported_names_are_removed(
    router_and_backend: tuple[RunningRouter, RecordingBackend], name: str
) -> None:
    router, seen = router_and_backend
    result = await exchange(router.port, request_bytes("GET", "/public", [(name, "SPOOF")]))
    assert result.statuses == [200]
    assert all(value != "SPOOF" for _, value in seen.requests[-1].headers)


async def test_client_address_headers_pass_from_a_trusted_proxy_only() -> None:
    sent = [("True-Client-IP", "203.0.113.7"), ("X-Original-Forwarded-For", "203.0.113.8")]
    async with recording_backend("app") as (seen, backend):
        trusted = auth_config(backend.url, trusted_proxies=["127.0.0.1/32"])
        async with run_router(trusted) as router:
            assert (await exchange(router.port, request_bytes("GET", "/", sent))).statuses == [200]
        assert seen.requests[-1].value("True-Client-IP") == "203.0.113.7"
        assert seen.requests[-1].value("X-Original-Forwarded-For") == "203.0.113.8"
        # URL overrides and identity families are removed even from a trusted proxy.
        spoof = [("X-Original-URL", "/admin"), ("Remote-User", "root")]
        async with run_router(trusted) as router:
            assert (await exchange(router.port, request_bytes("GET", "/", spoof))).statuses == [200]
        assert {"x-original-url", "remote-user"}.isdisjoint(seen.requests[-1].header_names())
        async with run_router(auth_config(backend.url)) as router:
            assert (await exchange(router.port, request_bytes("GET", "/", sent))).statuses == [200]
        assert {"true-client-ip", "x-original-forwarded-for"}.isdisjoint(
            seen.requests[-1].header_names()
        )
