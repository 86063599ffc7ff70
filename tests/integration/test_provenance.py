"""The provenance plugin against a running router: header, access log, signatures that an
independent verifier accepts and that fail when any covered part is changed."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import http_sf
import pytest
from aiohttp import ClientResponse, ClientSession, web
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from http_message_signatures import InvalidSignature

from router.config.loader import ConfigError
from router.testing import Backend, RunningRouter, run_backend, run_router
from tests.support.signatures import keys_from_jwks, new_key_pem, public_pem, verify_response

VERSION = {
    "repository": "https://github.com/example/app",
    "commit": "4f2a9c1d0e",
    "image": "ghcr.io/example/app:1.2",
    "image_digest": "sha256:" + "ab" * 32,
    "node": "worker-3",
}
KEYS = "/.well-known/commons-router/provenance-keys"


def config(backend: Backend, **settings: Any) -> dict[str, Any]:
    return {
        "plugins": [{"name": "provenance", "config": settings}],
        "routes": [
            {"name": "app", "upstreams": [{"url": backend.url, "version": VERSION}]},
        ],
    }


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    pem, _ = new_key_pem()
    path = tmp_path / "provenance.pem"
    path.write_bytes(pem)
    return path


async def jwks(client: ClientSession, router: RunningRouter) -> dict[str, Any]:
    async with client.get(router.url + KEYS) as response:
        assert response.status == 200
        assert response.content_type == "application/jwk-set+json"
        return dict(await response.json())


def lines(response: ClientResponse) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers]


async def test_every_response_is_stamped_logged_and_signed(
    backend: Backend, client: ClientSession, key_file: Path
) -> None:
    async with run_router(config(backend, key_file=str(key_file))) as router:
        keys = keys_from_jwks(await jwks(client, router))
        seen = []
        # Small (buffered), streamed, upstream error status, router 404, reserved path.
        for path, status in [
            ("/small?x=1", 200),
            ("/bytes/300000", 200),
            ("/status/418", 418),
            ("/missing/../status/503", 503),
        ]:
            async with client.get(router.url + path) as response:
                assert response.status == status
                await response.read()
                headers = lines(response)
                verify_response("GET", str(response.request_info.url), status, headers, keys)
                provenance = http_sf.parse(
                    response.headers["Provenance"].encode(), tltype="dictionary"
                )
                seen.append(response.headers["X-Request-Id"])
                assert provenance["repo"][0] == VERSION["repository"]
                assert provenance["commit"][0] == VERSION["commit"]
                assert provenance["image_digest"][0] == VERSION["image_digest"]
                assert provenance["route"][0] == "app"
                assert "node" not in provenance
        async with client.post(router.url + "/upload", data=b"x" * 10) as response:
            verify_response("POST", str(response.request_info.url), 200, lines(response), keys)
        log = [line for line in await router.access_log() if line["request_id"] in seen]
        assert len(log) == 4
        for line in log:
            assert line["provenance"]["commit"] == VERSION["commit"]
            assert line["provenance"]["router"]


async def test_responses_without_an_endpoint_carry_the_router_version(
    backend: Backend, client: ClientSession, key_file: Path
) -> None:
    settings = config(backend, key_file=str(key_file))
    settings["routes"][0]["hosts"] = ["app.test"]
    async with run_router(settings) as router:
        keys = keys_from_jwks(await jwks(client, router))
        async with client.get(router.url + "/x", headers={"Host": "other.test"}) as response:
            assert response.status == 404
            verify_response(
                "GET", f"http://other.test{response.url.path}", 404, lines(response), keys
            )
            provenance = http_sf.parse(response.headers["Provenance"].encode(), tltype="dictionary")
            # router-dirty appears only when the checkout under test has uncommitted changes
            assert set(provenance) - {"router-dirty"} == {"router", "router-commit"}


@pytest.mark.parametrize(
    "tamper",
    ["status", "provenance", "request_id", "method", "authority", "path", "created", "signature"],
)
async def test_any_tampered_component_fails_verification(
    backend: Backend, client: ClientSession, key_file: Path, tamper: str
) -> None:
    async with run_router(config(backend, key_file=str(key_file))) as router:
        keys = keys_from_jwks(await jwks(client, router))
        async with client.get(router.url + "/page") as response:
            await response.read()
            headers = lines(response)
            url = str(response.request_info.url)
        verify_response("GET", url, 200, headers, keys)  # untouched: valid
        method, status = "GET", 200

        def edit(name: str, change: Any) -> list[tuple[str, str]]:
            return [(k, change(v) if k.lower() == name else v) for k, v in headers]

        if tamper == "status":
            status = 203
        elif tamper == "provenance":
            headers = edit("provenance", lambda v: v.replace("4f2a9c1d0e", "4f2a9c1d0f"))
        elif tamper == "request_id":
            headers = edit("x-request-id", lambda v: v[:-1] + ("0" if v[-1] != "0" else "1"))
        elif tamper == "method":
            method = "HEAD"
        elif tamper == "authority":
            url = url.replace("127.0.0.1", "localhost")
        elif tamper == "path":
            url = url.replace("/page", "/pagf")
        elif tamper == "created":
            headers = edit("signature-input", lambda v: v.replace(";created=", ";created=1"))
        else:
            headers = edit("signature", lambda v: v[:6] + ("A" if v[6] != "A" else "B") + v[7:])
        with pytest.raises(InvalidSignature):
            verify_response(method, url, status, headers, keys)


async def spoofing_upstream(request: web.Request) -> web.Response:
    return web.Response(
        text="spoof",
        headers={
            "Provenance": 'repo="https://evil.example/app", commit="bad"',
            "Signature-Input": 'prov=("@status");created=1;keyid="evil", up=("@status");created=1',
            "Signature": "prov=:AAAA:, up=:BBBB:",
        },
    )


async def test_upstream_cannot_supply_our_provenance_or_signature(
    client: ClientSession, key_file: Path
) -> None:
    app = web.Application()
    app.router.add_get("/{tail:.*}", spoofing_upstream)
    async with run_backend(app) as backend, run_router(
        config(backend, key_file=str(key_file))
    ) as router:
        keys = keys_from_jwks(await jwks(client, router))
        async with client.get(router.url + "/") as response:
            headers = lines(response)
            assert response.headers.getall("Provenance") == [response.headers["Provenance"]]
            assert "evil" not in response.headers["Provenance"]
            signature_input = http_sf.parse(
                response.headers["Signature-Input"].encode(), tltype="dictionary"
            )
            # The upstream's own signature (another label) is kept; ours replaces "prov".
            assert set(signature_input) == {"up", "prov"}
            assert signature_input["prov"][1]["keyid"] != "evil"
            verify_response("GET", str(response.request_info.url), 200, headers, keys)
    async with run_backend(app) as backend, run_router(config(backend, sign="never")) as router:
        async with client.get(router.url + "/") as response:
            # Not signing: the upstream's "prov" is removed all the same, "up" is kept.
            assert response.headers["Signature-Input"] == 'up=("@status");created=1'
            assert response.headers["Signature"] == "up=:BBBB:"


async def test_content_digest_covers_small_buffered_bodies_only(
    backend: Backend, client: ClientSession, key_file: Path
) -> None:
    settings = config(
        backend, key_file=str(key_file), content_digest={"enabled": True, "max_size": "8KiB"}
    )
    required = ("@status", "provenance", "content-digest", '"@path";req')
    async with run_router(settings) as router:
        keys = keys_from_jwks(await jwks(client, router))
        async with client.get(router.url + "/small") as response:
            body = await response.read()
            url, headers = str(response.request_info.url), lines(response)
        assert response.headers["Content-Digest"].startswith("sha-256=:")
        verify_response("GET", url, 200, headers, keys, required=required, body=body)
        with pytest.raises(InvalidSignature):
            verify_response("GET", url, 200, headers, keys, required=required, body=body + b" ")
        async with client.get(router.url + "/bytes/20000") as response:
            await response.read()
            assert "Content-Digest" not in response.headers  # larger than max_size
            verify_response("GET", str(response.request_info.url), 200, lines(response), keys)


async def test_jwks_publishes_current_and_retired_keys(
    backend: Backend, client: ClientSession, key_file: Path
) -> None:
    _, retired = new_key_pem()
    settings = config(backend, key_file=str(key_file), retired_public_keys=[public_pem(retired)])
    async with run_router(settings) as router:
        document = await jwks(client, router)
        assert len(document["keys"]) == 2
        assert all(k["kty"] == "OKP" and k["crv"] == "Ed25519" for k in document["keys"])
        assert all("d" not in k for k in document["keys"])  # never the private part
        async with client.get(router.url + "/") as response:
            keyid = http_sf.parse(
                response.headers["Signature-Input"].encode(), tltype="dictionary"
            )["prov"][1]["keyid"]
        assert keyid == document["keys"][0]["kid"]


async def test_serving_without_a_key_fails_closed(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="signing needs an Ed25519 private key"):
        async with run_router(config(backend)):
            pass
    rsa = tmp_path / "rsa.pem"
    rsa.write_bytes(
        generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    with pytest.raises(ConfigError, match="not Ed25519"):
        async with run_router(config(backend, key_file=str(rsa))):
            pass
    with pytest.raises(ConfigError, match="cannot read"):
        async with run_router(config(backend, key_file=str(tmp_path / "nope.pem"))):
            pass


async def test_signing_can_be_turned_off(backend: Backend, client: ClientSession) -> None:
    async with run_router(config(backend, sign=False)) as router:
        async with client.get(router.url + "/") as response:
            assert "Provenance" in response.headers
            assert "Signature" not in response.headers


@pytest.fixture
async def git_checkout(tmp_path: Path) -> AsyncIterator[Path]:
    repo = tmp_path / "app"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "dev@example.org")
    git("config", "user.name", "Dev")
    git("remote", "add", "origin", "git@github.com:example/app.git")
    (repo / "app.py").write_text("print('hi')\n")
    git("add", "app.py")
    git("commit", "-q", "-m", "first")
    yield repo


async def test_dev_source_reports_the_checkout_and_its_dirtiness(
    backend: Backend, client: ClientSession, git_checkout: Path
) -> None:
    head = subprocess.run(
        ["git", "-C", str(git_checkout), "rev-parse", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    settings = config(backend, source_dir=str(git_checkout), source_interval="100ms")
    async with run_router(settings, dev_mode=True) as router:

        async def provenance() -> dict[str, Any]:
            async with client.get(router.url + "/") as response:
                parsed = http_sf.parse(response.headers["Provenance"].encode(), tltype="dictionary")
                return {k: v[0] for k, v in parsed.items()}

        first = await provenance()
        assert first["commit"] == head
        assert first["repo"] == "https://github.com/example/app"
        assert first["dirty"] is False
        (git_checkout / "app.py").write_text("print('changed')\n")
        deadline = time.monotonic() + 10
        while (await provenance())["dirty"] is not True:
            assert time.monotonic() < deadline, "the change was never noticed"
            await asyncio.sleep(0.05)


async def test_signing_only_when_requested(
    backend: Backend, client: ClientSession, key_file: Path
) -> None:
    async with run_router(config(backend, key_file=str(key_file), sign="requested")) as router:
        keys = keys_from_jwks(await jwks(client, router))
        async with client.get(router.url + "/plain") as response:
            assert "Provenance" in response.headers
            assert "Signature" not in response.headers
        asked = {"Accept-Signature": 'prov=("@status");tag="commons-router"'}
        async with client.get(router.url + "/asked", headers=asked) as response:
            verify_response("GET", str(response.request_info.url), 200, lines(response), keys)


async def test_websocket_upgrade_is_signed(
    backend: Backend, client: ClientSession, key_file: Path
) -> None:
    async with run_router(config(backend, key_file=str(key_file))) as router:
        keys = keys_from_jwks(await jwks(client, router))
        async with client.ws_connect(router.url + "/ws") as ws:
            upgrade = ws._response  # the 101 answer
            assert upgrade.status == 101
            verify_response("GET", str(upgrade.request_info.url), 101, lines(upgrade), keys)
            await ws.send_str("close:1000")
            await ws.receive()
