"""Several public listeners: plain and TLS side by side, routes limited to listeners,
HTTPS redirects, HSTS and client certificates (mutual TLS)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientConnectionError, ClientSession, TCPConnector, web
from yarl import URL

from router.api import Handler, Middleware, NoConfig, Plugin, context_of
from router.config.loader import ConfigError, load_config_text
from router.testing import Backend, run_router
from router.tls import listener as listener_module
from tests.support.kubecluster import eventually
from tests.support.tls import TestCA


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
def server_files(ca: TestCA, tmp_path: Path) -> tuple[Path, Path]:
    return ca.write(tmp_path, "server", "localhost")


def two_listeners(
    backend: Backend, files: tuple[Path, Path], *, https: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "listeners": [
            {"name": "http", "listen": "127.0.0.1:0", "https_redirect_port": 8443},
            {"name": "https", "listen": "127.0.0.1:0", "tls": https or {}},
        ],
        "tls": {"certificates": [{"cert": str(files[0]), "key": str(files[1])}]},
        "routes": [
            {
                "name": "secure",
                "path": "/secure",
                "https_redirect": True,
                "upstreams": [{"url": backend.url}],
            },
            {"name": "app", "upstreams": [{"url": backend.url}]},
        ],
    }


async def test_plain_and_tls_listeners_serve_together_with_redirect_and_hsts(
    backend: Backend, ca: TestCA, server_files: tuple[Path, Path]
) -> None:
    https = {"hsts": {"max_age": "1h", "include_subdomains": True}}
    trust = ssl.create_default_context(cadata=ca.pem.decode())
    async with (
        run_router(two_listeners(backend, server_files, https=https)) as router,
        ClientSession(connector=TCPConnector(ssl=trust)) as client,
    ):
        plain = f"http://127.0.0.1:{router.port_of('http')}"
        secure = f"https://localhost:{router.port_of('https')}"
        async with client.get(
            URL(plain + "/secure/a/../b?q=1&r=%2F", encoded=True),
            headers={"Host": "shop.example:80"},
            allow_redirects=False,
        ) as response:
            assert response.status == 308
            assert response.headers["Location"] == "https://shop.example:8443/secure/b?q=1&r=%2F"
            assert "Strict-Transport-Security" not in response.headers
        async with client.get(plain + "/other") as response:
            assert response.status == 200
            assert "Strict-Transport-Security" not in response.headers
        async with client.get(secure + "/secure/page") as response:
            assert response.status == 200
            assert response.headers["Strict-Transport-Security"] == (
                "max-age=3600; includeSubDomains"
            )
            seen = {k.lower(): v for k, v in (await response.json())["headers"]}
            assert seen["x-forwarded-proto"] == "https"
            assert seen["x-forwarded-port"] == str(router.port_of("https"))
        async with client.get(secure + "/nowhere-else") as response:
            assert response.headers["Strict-Transport-Security"].startswith("max-age=3600")


async def test_route_limited_to_a_listener_is_not_found_on_others(
    backend: Backend, ca: TestCA, server_files: tuple[Path, Path]
) -> None:
    config = two_listeners(backend, server_files)
    config["routes"] = [
        {"name": "inside", "listeners": ["http"], "upstreams": [{"url": backend.url}]}
    ]
    trust = ssl.create_default_context(cadata=ca.pem.decode())
    async with (
        run_router(config) as router,
        ClientSession(connector=TCPConnector(ssl=trust)) as client,
    ):
        async with client.get(f"http://127.0.0.1:{router.port_of('http')}/") as response:
            assert response.status == 200
        async with client.get(f"https://localhost:{router.port_of('https')}/") as response:
            assert response.status == 404


def mutual(ca: TestCA, mode: str, tmp_path: Path) -> dict[str, Any]:
    bundle = tmp_path / "clients-ca.pem"
    bundle.write_bytes(ca.pem)
    return {
        "client_certificates": {
            "mode": mode,
            "ca": str(bundle),
            "subject_header": "X-Client-Subject",
        }
    }


def client_context(ca: TestCA, tmp_path: Path, signer: TestCA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.pem.decode())
    cert, key = (signer or ca).write(tmp_path, "client", common_name="alice", client=True)
    context.load_cert_chain(cert, key)
    return context


async def test_required_client_certificate(
    backend: Backend, ca: TestCA, server_files: tuple[Path, Path], tmp_path: Path
) -> None:
    config = two_listeners(backend, server_files, https=mutual(ca, "required", tmp_path))
    async with run_router(config) as router:
        url = f"https://localhost:{router.port_of('https')}/whoami"
        spoof = {"X-Client-Subject": "CN=admin", "X-Client_Subject": "CN=admin"}
        async with (
            ClientSession(connector=TCPConnector(ssl=client_context(ca, tmp_path))) as client,
            client.get(url, headers=spoof) as response,
        ):
            assert response.status == 200
            seen = [(k.lower(), v) for k, v in (await response.json())["headers"]]
            assert [v for k, v in seen if k in ("x-client-subject", "x-client_subject")] == [
                "CN=alice"
            ]
        trust_only = ssl.create_default_context(cadata=ca.pem.decode())
        with pytest.raises(ClientConnectionError):
            async with (
                ClientSession(connector=TCPConnector(ssl=trust_only)) as client,
                client.get(url) as response,
            ):
                pass
        stranger = client_context(ca, tmp_path, signer=TestCA("someone else"))
        with pytest.raises(ClientConnectionError):
            async with (
                ClientSession(connector=TCPConnector(ssl=stranger)) as client,
                client.get(url) as response,
            ):
                pass
        # The plain listener never passes a subject on, whatever the client sends.
        async with (
            ClientSession() as client,
            client.get(f"http://127.0.0.1:{router.port_of('http')}/x", headers=spoof) as response,
        ):
            seen = [k.lower() for k, _ in (await response.json())["headers"]]
            assert "x-client-subject" not in seen and "x-client_subject" not in seen


async def test_optional_client_certificate(
    backend: Backend, ca: TestCA, server_files: tuple[Path, Path], tmp_path: Path
) -> None:
    config = two_listeners(backend, server_files, https=mutual(ca, "optional", tmp_path))
    trust_only = ssl.create_default_context(cadata=ca.pem.decode())
    async with (
        run_router(config) as router,
        ClientSession(connector=TCPConnector(ssl=trust_only)) as client,
        client.get(
            f"https://localhost:{router.port_of('https')}/", headers={"X-Client-Subject": "CN=x"}
        ) as response,
    ):
        assert response.status == 200
        seen = [k.lower() for k, _ in (await response.json())["headers"]]
        assert "x-client-subject" not in seen


async def test_tls_13_only_listener_refuses_tls_12(
    backend: Backend,
    ca: TestCA,
    server_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Counted when the loop's handshake timeout would have ended it; here, sooner.
    monkeypatch.setattr(listener_module, "HANDSHAKE_DEADLINE", 0.3)
    config = two_listeners(backend, server_files, https={"min_version": "1.3"})
    old = ssl.create_default_context(cadata=ca.pem.decode())
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    async with run_router(config) as router:
        url = f"https://localhost:{router.port_of('https')}/"
        with pytest.raises(ClientConnectionError):
            async with (
                ClientSession(connector=TCPConnector(ssl=old)) as client,
                client.get(url),
            ):
                pass
        unfinished = 'commons_router_tls_handshakes_unfinished_total{listener="https"} 1'

        async def counted() -> bool:
            return unfinished in await _text(router.admin_url + "/metrics")

        await eventually(counted, "the failed handshake is counted")
        modern = ssl.create_default_context(cadata=ca.pem.decode())
        modern.set_alpn_protocols(["h2", "http/1.1"])
        _, writer = await asyncio.open_connection(
            "127.0.0.1", router.port_of("https"), ssl=modern, server_hostname="localhost"
        )
        ssl_object = writer.get_extra_info("ssl_object")
        writer.close()
        assert ssl_object.version() == "TLSv1.3"
        assert ssl_object.selected_alpn_protocol() == "http/1.1"


def test_listener_and_listeners_together_are_refused_with_the_migration() -> None:
    text = """
listener: {listen: 127.0.0.1:8080, tls_cert: a.pem, tls_key: a.key}
listeners:
  - {name: http, listen: 127.0.0.1:8081}
"""
    with pytest.raises(ConfigError) as raised:
        load_config_text(text, "<test>")
    message = str(raised.value)
    assert "listeners[0].listen" in message
    assert "tls.certificates[0].cert/key" in message


def test_route_naming_an_unknown_listener_is_refused() -> None:
    text = """
listeners: [{name: http, listen: 127.0.0.1:8081}]
routes: [{name: r, listeners: [htps], builtin: echo}]
"""
    with pytest.raises(ConfigError, match="unknown listeners"):
        load_config_text(text, "<test>")


async def _text(url: str) -> str:
    async with ClientSession() as client, client.get(url) as response:
        return await response.text()


class SubjectProbe(Plugin[NoConfig]):
    """Answers with the client certificate subject the router hands to plugins."""

    name = "subject_probe"

    def global_middleware(self) -> Middleware | None:
        async def probe(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            subject = context_of(request).client_certificate_subject
            return web.Response(text=repr(subject))

        return probe


async def test_plugins_see_the_verified_client_certificate_subject(
    backend: Backend, ca: TestCA, server_files: tuple[Path, Path], tmp_path: Path
) -> None:
    config = two_listeners(backend, server_files, https=mutual(ca, "optional", tmp_path))
    config["plugins"] = [{"name": "subject_probe"}]
    async with run_router(config, plugins={"subject_probe": SubjectProbe}) as router:
        url = f"https://localhost:{router.port_of('https')}/"
        with_cert = client_context(ca, tmp_path)
        without = ssl.create_default_context(cadata=ca.pem.decode())
        for context, expected in ((with_cert, "'CN=alice'"), (without, "None")):
            async with (
                ClientSession(connector=TCPConnector(ssl=context)) as client,
                client.get(url) as response,
            ):
                assert await response.text() == expected
