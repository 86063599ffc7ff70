"""The public listener over TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiohttp import ClientSession, TCPConnector

from router.testing import Backend, run_router
from tests.support.tls import self_signed


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


async def test_https_listener_forwards_with_https_scheme(
    backend: Backend, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    config = {
        "listener": {"tls_cert": str(cert), "tls_key": str(key)},
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }
    trust = ssl.create_default_context(cafile=str(cert))
    async with (
        run_router(config) as router,
        ClientSession(connector=TCPConnector(ssl=trust)) as client,
    ):
        url = f"https://127.0.0.1:{router.port}/secure"
        async with client.get(url) as response:
            assert response.status == 200
            seen = {k.lower(): v for k, v in (await response.json())["headers"]}
        assert seen["x-forwarded-proto"] == "https"
        assert "proto=https" in seen["forwarded"]
