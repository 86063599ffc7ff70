"""The certificate store behind TLS listeners: SNI, defaults, rotation, broken files.

Every check is a real handshake against the running router.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, TCPConnector

from router.testing import Backend, RunningRouter, run_router
from tests.support.kubecluster import eventually
from tests.support.tls import TestCA, served_common_name, served_names


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def tls_config(backend: Backend, files: list[tuple[Path, Path]], **tls: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "https", "listen": "127.0.0.1:0", "tls": {}}],
        "tls": {
            "certificates": [{"cert": str(c), "key": str(k)} for c, k in files],
            "watch_interval": 0.05,
            **tls,
        },
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }


async def names(router: RunningRouter, sni: str | None, ca: TestCA) -> list[str]:
    return await asyncio.to_thread(served_names, router.port, sni, ca)


async def test_sni_picks_the_most_specific_certificate_and_never_another_hosts(
    backend: Backend, ca: TestCA, tmp_path: Path
) -> None:
    files = [
        ca.write(tmp_path, "a", "a.example"),
        ca.write(tmp_path, "wild", "*.b.example"),
        ca.write(tmp_path, "exact", "www.b.example"),
    ]
    async with run_router(tls_config(backend, files)) as router:
        assert await names(router, "a.example", ca) == ["a.example"]
        assert await names(router, "A.Example", ca) == ["a.example"]
        assert await names(router, "api.b.example", ca) == ["*.b.example"]
        assert await names(router, "www.b.example", ca) == ["www.b.example"]
        # SECURITY: no certificate answers for a name its SAN does not cover.
        for name in ("b.example", "x.a.example", "deep.api.b.example", "c.example"):
            with pytest.raises(ssl.SSLError):
                await names(router, name, ca)
        with pytest.raises(ssl.SSLError):
            await names(router, None, ca)
        metrics = await _text(router.admin_url + "/metrics")
        assert (
            'commons_router_tls_handshake_failures_total{listener="https",reason="unknown_name"} 4'
            in metrics
        )
        assert 'reason="no_sni"} 1' in metrics
        assert 'commons_router_tls_handshakes_total{listener="https"} 4' in metrics
        assert (
            'commons_router_tls_certificate_expiry_timestamp_seconds{host="a.example"}' in metrics
        )
        assert (
            'commons_router_tls_certificate_expiry_timestamp_seconds{host="*.b.example"}' in metrics
        )


async def test_default_certificate_answers_without_sni_and_unknown_names(
    backend: Backend, ca: TestCA, tmp_path: Path
) -> None:
    files = [ca.write(tmp_path, "a", "a.example"), ca.write(tmp_path, "d", "default.example")]
    config = tls_config(backend, files, default_certificate="default.example")
    async with run_router(config) as router:
        assert await names(router, None, ca) == ["default.example"]
        assert await names(router, "unknown.example", ca) == ["default.example"]
        assert await names(router, "a.example", ca) == ["a.example"]


async def test_https_request_with_sni_reaches_the_backend(
    backend: Backend, ca: TestCA, tmp_path: Path
) -> None:
    files = [ca.write(tmp_path, "a", "a.example")]
    trust = ssl.create_default_context(cadata=ca.pem.decode())
    async with (
        run_router(tls_config(backend, files)) as router,
        ClientSession(
            connector=TCPConnector(ssl=trust, resolver=_Loopback())  # a.example -> 127.0.0.1
        ) as client,
        client.get(f"https://a.example:{router.port}/x?y=1") as response,
    ):
        assert response.status == 200
        seen = await response.json()
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert headers["x-forwarded-proto"] == "https"
        assert headers["x-forwarded-port"] == str(router.port)


async def test_rotation_serves_new_handshakes_and_keeps_open_connections(
    backend: Backend, ca: TestCA, tmp_path: Path
) -> None:
    cert, key = ca.write(tmp_path, "a", "a.example", common_name="first")
    trust = ssl.create_default_context(cadata=ca.pem.decode())
    async with run_router(tls_config(backend, [(cert, key)])) as router:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", router.port, ssl=trust, server_hostname="a.example"
        )
        try:
            first = writer.get_extra_info("ssl_object").getpeercert()
            assert _common_name(first) == "first"
            # Rotate as certbot does: new files renamed into place.
            new_cert, new_key = ca.write(tmp_path, "next", "a.example", common_name="second")
            shutil.move(new_key, key)
            shutil.move(new_cert, cert)

            async def rotated() -> bool:
                name = await asyncio.to_thread(served_common_name, router.port, "a.example", ca)
                return name == "second"

            await eventually(rotated, "the new certificate is served")
            # The connection opened before the rotation still answers.
            writer.write(b"GET /still HTTP/1.1\r\nHost: a.example\r\n\r\n")
            status = await asyncio.wait_for(reader.readline(), 5)
            assert status.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()


@pytest.mark.parametrize("breakage", ["garbage", "mismatched key", "expired", "no SAN"])
async def test_broken_certificate_is_rejected_and_the_previous_keeps_serving(
    backend: Backend, ca: TestCA, tmp_path: Path, breakage: str
) -> None:
    cert, key = ca.write(tmp_path, "a", "a.example", common_name="good")
    async with run_router(tls_config(backend, [(cert, key)])) as router:
        if breakage == "garbage":
            cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
        elif breakage == "mismatched key":
            key.write_bytes(ca.issue("a.example")[1])
        elif breakage == "expired":
            chain, new_key = ca.issue("a.example", days=-1, valid_from_days=-3)
            key.write_bytes(new_key)
            cert.write_bytes(chain)
        else:
            chain, new_key = ca.issue(common_name="a.example")
            key.write_bytes(new_key)
            cert.write_bytes(chain)

        async def reported() -> bool:
            document = await _json(router.admin_url + "/routes")
            return any("certificate rejected" in p["message"] for p in document["problems"])

        await eventually(reported, "the problem is on /routes")
        document = await _json(router.admin_url + "/routes")
        [problem] = document["problems"]
        assert problem["source"] == f"file:{cert}"
        assert [c["names"] for c in document["certificates"]] == [["a.example"]]
        assert await asyncio.to_thread(served_common_name, router.port, "a.example", ca) == "good"


async def test_routes_lists_certificates_with_names_issuer_expiry_and_source(
    backend: Backend, ca: TestCA, tmp_path: Path
) -> None:
    cert, key = ca.write(tmp_path, "a", "a.example", "www.a.example")
    async with run_router(tls_config(backend, [(cert, key)])) as router:
        document = await _json(router.admin_url + "/routes")
    [entry] = document["certificates"]
    assert entry["names"] == ["a.example", "www.a.example"]
    assert entry["issuer"] == "CN=commons-router test CA"
    assert entry["source"] == f"file:{cert}"
    assert entry["not_after"].endswith("Z")


async def test_expiring_certificate_is_warned_about(
    backend: Backend, ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = [ca.write(tmp_path, "soon", "soon.example", days=3)]
    async with run_router(tls_config(backend, files)):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("soon.example" in m and "expires in 3.0 days" in m for m in warnings)


def test_openssl_s_client_gets_the_certificate_for_its_servername(
    ca: TestCA, tmp_path: Path
) -> None:
    files = [ca.write(tmp_path, "a", "a.example"), ca.write(tmp_path, "b", "b.example")]
    (tmp_path / "ca.pem").write_bytes(ca.pem)

    async def scenario() -> tuple[str, str]:
        from router.testing import run_backend
        from tests.support.backends import echo_app

        async with run_backend(echo_app()) as backend, run_router(tls_config(backend, files)) as r:
            return await asyncio.gather(
                asyncio.to_thread(_s_client, r.port, "b.example", tmp_path / "ca.pem"),
                asyncio.to_thread(_s_client, r.port, "a.example", tmp_path / "ca.pem"),
            )

    b_out, a_out = asyncio.run(scenario())
    assert "subject=CN = b.example" in b_out
    assert "Verify return code: 0 (ok)" in b_out
    assert "ALPN protocol: http/1.1" in b_out
    assert "subject=CN = a.example" in a_out


def _s_client(port: int, name: str, ca_file: Path) -> str:
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            name,
            "-verify_hostname",
            name,
            "-CAfile",
            str(ca_file),
            "-alpn",
            "h2,http/1.1",
        ],
        input=b"",
        capture_output=True,
        timeout=10,
        check=False,
    )
    return result.stdout.decode(errors="replace")


def _common_name(peer: Any) -> str:
    for rdn in peer["subject"]:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


async def _json(url: str) -> Any:
    async with ClientSession() as client, client.get(url) as response:
        return await response.json()


async def _text(url: str) -> str:
    async with ClientSession() as client, client.get(url) as response:
        return await response.text()


class _Loopback:
    """A resolver that sends every name to 127.0.0.1 (tests never leave the machine)."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": 2,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        return None
