"""TLS session tickets and their key rotation; failed handshakes counted by reason."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from router.testing import Backend, RunningRouter, run_router
from router.tls.listener import TlsListener
from tests.support.tls import TestCA


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def https_config(
    backend: Backend, ca: TestCA, tmp_path: Path, **listener_tls: Any
) -> dict[str, Any]:
    cert, key = ca.write(tmp_path, "server", "localhost")
    return {
        "listeners": [{"name": "https", "listen": "127.0.0.1:0", "tls": listener_tls}],
        "tls": {"certificates": [{"cert": str(cert), "key": str(key)}]},
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }


def tls_listener(router: RunningRouter) -> TlsListener:
    return router.runtime._tls_listeners["https"]


REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


def request(tls: ssl.SSLSocket) -> bytes:
    """One keep-alive request; reading the answer also takes in TLS 1.3 tickets."""
    tls.sendall(REQUEST)
    answer = tls.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    return answer


def connect(port: int, client: ssl.SSLContext, session: ssl.SSLSession | None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client.wrap_socket(raw, server_hostname="localhost", session=session)


def visit(
    port: int, client: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[ssl.SSLSession, bool]:
    """Connect (offering ``session``) and make one request: the session to resume next, and
    whether this one was resumed."""
    with connect(port, client, session) as tls:
        request(tls)
        reused, fresh = tls.session_reused, tls.session
    assert fresh is not None
    return fresh, bool(reused)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tickets_resume_until_their_key_is_rotated_and_open_connections_survive(
    backend: Backend, ca: TestCA, tmp_path: Path, version: ssl.TLSVersion
) -> None:
    client = ssl.create_default_context(cadata=ca.pem.decode())
    client.minimum_version = client.maximum_version = version
    async with run_router(https_config(backend, ca, tmp_path)) as router:
        port = router.port_of("https")
        first, _ = await asyncio.to_thread(visit, port, client, None)
        assert first.has_ticket
        second, reused = await asyncio.to_thread(visit, port, client, first)
        assert reused
        # Resumed from the ticket: the server's session cache holds nothing.
        stats = tls_listener(router).context.current.session_stats()
        assert stats["number"] == 0 and stats["hits"] >= 1
        established = await asyncio.to_thread(connect, port, client, None)
        try:
            await asyncio.to_thread(request, established)
            tls_listener(router).rotate()
            _, reused = await asyncio.to_thread(visit, port, client, second)
            assert not reused
            # The connection made before the rotation keeps working.
            await asyncio.to_thread(request, established)
        finally:
            established.close()
        # A ticket of the new key resumes again.
        third, _ = await asyncio.to_thread(visit, port, client, None)
        _, reused = await asyncio.to_thread(visit, port, client, third)
        assert reused


async def _failures(router: RunningRouter) -> dict[str, int]:
    async with (
        ClientSession() as http,
        http.get(router.admin_url + "/metrics") as response,
    ):
        text = await response.text()
    prefix = 'commons_router_tls_handshake_failures_total{listener="https",reason="'
    found: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            reason, _, count = line[len(prefix) :].partition('"} ')
            found[reason] = int(count)
    return found


def _handshake(port: int, client: ssl.SSLContext, server_hostname: str = "localhost") -> None:
    """A handshake the server refuses (with TLS 1.3 client certificates, the client learns
    it at its first read)."""
    try:
        with connect_named(port, client, server_hostname) as tls:
            tls.sendall(REQUEST)
            answer = tls.recv(1024)
    except (ssl.SSLError, ConnectionError):
        return
    assert answer == b"", answer[:80]


def _plain_http(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(REQUEST)
        with contextlib.suppress(ConnectionError):
            raw.recv(1024)


def connect_named(port: int, client: ssl.SSLContext, server_hostname: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client.wrap_socket(raw, server_hostname=server_hostname)


async def test_failed_handshakes_are_counted_by_reason_at_once(
    backend: Backend, ca: TestCA, tmp_path: Path
) -> None:
    trust = ca.pem.decode()
    async with run_router(https_config(backend, ca, tmp_path, min_version="1.3")) as router:
        port = router.port_of("https")
        old = ssl.create_default_context(cadata=trust)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        await asyncio.to_thread(_handshake, port, old)
        modern = ssl.create_default_context(cadata=trust)
        await asyncio.to_thread(_handshake, port, modern, "elsewhere.example")
        distrustful = ssl.create_default_context(cadata=TestCA("another").pem.decode())
        await asyncio.to_thread(_handshake, port, distrustful)
        await asyncio.to_thread(_plain_http, port)
        assert await _failures(router) == {
            "protocol_version": 1,
            "unknown_name": 1,
            "client_alert": 1,
            "not_tls": 1,
        }

    async with run_router(https_config(backend, ca, tmp_path)) as router:
        port = router.port_of("https")
        weak = ssl.create_default_context(cadata=trust)
        weak.maximum_version = ssl.TLSVersion.TLSv1_2
        weak.set_ciphers("AES128-GCM-SHA256")  # RSA key exchange: no forward secrecy
        await asyncio.to_thread(_handshake, port, weak)
        assert await _failures(router) == {"no_shared_cipher": 1}


async def test_client_certificate_failures_are_counted_by_reason(
    backend: Backend, ca: TestCA, tmp_path: Path
) -> None:
    bundle = tmp_path / "clients-ca.pem"
    bundle.write_bytes(ca.pem)
    mutual = {"client_certificates": {"mode": "required", "ca": str(bundle)}}
    async with run_router(https_config(backend, ca, tmp_path, **mutual)) as router:
        port = router.port_of("https")
        trust_only = ssl.create_default_context(cadata=ca.pem.decode())
        await asyncio.to_thread(_handshake, port, trust_only)
        stranger = ssl.create_default_context(cadata=ca.pem.decode())
        cert, key = TestCA("someone else").write(
            tmp_path, "client", common_name="mallory", client=True
        )
        stranger.load_cert_chain(cert, key)
        await asyncio.to_thread(_handshake, port, stranger)
        assert await _failures(router) == {"client_certificate": 2}


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_resumed_sessions_keep_the_verified_client_certificate(
    backend: Backend, ca: TestCA, tmp_path: Path, version: ssl.TLSVersion
) -> None:
    bundle = tmp_path / "clients-ca.pem"
    bundle.write_bytes(ca.pem)
    mutual = {
        "client_certificates": {
            "mode": "required",
            "ca": str(bundle),
            "subject_header": "X-Client-Subject",
        }
    }
    client = ssl.create_default_context(cadata=ca.pem.decode())
    client.minimum_version = client.maximum_version = version
    cert, key = ca.write(tmp_path, "client", common_name="alice", client=True)
    client.load_cert_chain(cert, key)

    def whoami(session: ssl.SSLSession | None) -> tuple[ssl.SSLSession, bool, bytes]:
        with connect(port, client, session) as tls:
            tls.sendall(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
            assert tls.session is not None
            return tls.session, bool(tls.session_reused), answer

    async with run_router(https_config(backend, ca, tmp_path, **mutual)) as router:
        port = router.port_of("https")
        session, reused, answer = await asyncio.to_thread(whoami, None)
        assert not reused and b"CN=alice" in answer
        _, reused, answer = await asyncio.to_thread(whoami, session)
        assert reused
        assert answer.startswith(b"HTTP/1.1 200") and b"CN=alice" in answer


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_a_ticket_from_another_listener_never_skips_the_client_certificate(
    backend: Backend, ca: TestCA, tmp_path: Path, version: ssl.TLSVersion
) -> None:
    bundle = tmp_path / "clients-ca.pem"
    bundle.write_bytes(ca.pem)
    config = https_config(
        backend, ca, tmp_path, client_certificates={"mode": "required", "ca": str(bundle)}
    )
    config["listeners"].append({"name": "open", "listen": "127.0.0.1:0", "tls": {}})
    client = ssl.create_default_context(cadata=ca.pem.decode())
    client.minimum_version = client.maximum_version = version
    async with run_router(config) as router:
        ticket, _ = await asyncio.to_thread(visit, router.port_of("open"), client, None)
        _, reused = await asyncio.to_thread(visit, router.port_of("open"), client, ticket)
        assert reused

        def offer() -> bytes:
            try:
                with connect(router.port_of("https"), client, ticket) as tls:
                    tls.sendall(REQUEST)
                    return tls.recv(1024)
            except (ssl.SSLError, ConnectionError):
                return b""

        assert await asyncio.to_thread(offer) == b""
        assert await _failures(router) == {"client_certificate": 1}
