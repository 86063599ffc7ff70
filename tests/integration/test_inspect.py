"""``commons-router inspect`` against a running router: valid, tampered, missing, wrong key."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from router.buildinfo import build_info
from router.inspect import inspect
from router.testing import Backend, RunningRouter, run_backend, run_router
from tests.support.signatures import new_key_pem

VERSION = {"repository": "https://github.com/example/app", "commit": "4f2a9c1d0e"}
CLI = [sys.executable, "-m", "router"]


def config(backend: Backend, key_file: Path | None) -> dict[str, Any]:
    plugins = (
        [{"name": "provenance", "config": {"key_file": str(key_file)}}] if key_file else []
    )
    return {
        "plugins": plugins,
        "routes": [{"name": "app", "upstreams": [{"url": backend.url, "version": VERSION}]}],
    }


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    pem, _ = new_key_pem()
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    return path


@pytest.fixture
async def router(backend: Backend, key_file: Path) -> AsyncIterator[RunningRouter]:
    async with run_router(config(backend, key_file)) as running:
        yield running


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "inspect",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_valid_signature_exits_zero_and_shows_the_code(router: RunningRouter) -> None:
    code, out, err = await run_cli(router.url + "/some/page?q=1")
    assert code == 0, out + err
    assert "signature:  VALID" in out
    assert "https://github.com/example/app" in out
    assert "4f2a9c1d0e" in out
    app_part, router_part = out.split("  router code (commons-router):\n")
    assert "  application code:\n" in app_part and "4f2a9c1d0e" in app_part
    assert build_info().commit in router_part and build_info().commit != "unknown"
    code, out, _ = await run_cli("--json", router.url + "/some/page")
    assert code == 0
    result = json.loads(out)
    assert result["signature"]["result"] == "valid"
    assert result["provenance"]["commit"] == "4f2a9c1d0e"
    assert result["provenance"]["route"] == "app"
    assert result["provenance"]["router-commit"] == build_info().commit
    assert result["request_id"]


async def test_cookie_and_bearer_are_sent(router: RunningRouter) -> None:
    result = await inspect(router.url + "/echo", cookie="session=abc", bearer="tok")
    assert result.signature.result == "valid"
    log = await router.access_log()
    assert log[-2]["path"] == "/echo"  # then the key set


async def tampering_proxy(target: str) -> web.Application:
    """A man in the middle that passes everything on but edits the commit."""
    session = ClientSession(auto_decompress=False)

    async def relay(request: web.Request) -> web.Response:
        async with session.get(
            target + request.path_qs, headers={"Host": request.headers["Host"]}
        ) as upstream:
            body = await upstream.read()
            headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
        if "Provenance" in headers:
            headers["Provenance"] = headers["Provenance"].replace("4f2a9c1d0e", "0000000000")
        return web.Response(status=upstream.status, body=body, headers=headers)

    async def close(_: web.Application) -> None:
        await session.close()

    app = web.Application()
    app.router.add_get("/{tail:.*}", relay)
    app.on_cleanup.append(close)
    return app


async def test_tampered_provenance_is_invalid(router: RunningRouter) -> None:
    async with run_backend(await tampering_proxy(router.url)) as mitm:
        code, out, _ = await run_cli(mitm.url + "/page")
        assert code == 1
        assert "signature:  INVALID" in out
        assert "0000000000" in out and "NOT verified" in out


async def test_missing_signature(backend: Backend) -> None:
    async with run_router(config(backend, None)) as plain:
        code, out, _ = await run_cli("--json", plain.url + "/")
    assert code == 1
    result = json.loads(out)
    assert result["signature"]["result"] == "missing"
    assert result["provenance"] is None


async def test_wrong_key_is_reported_as_unknown(router: RunningRouter, tmp_path: Path) -> None:
    _, other = new_key_pem()
    from router_plugins.provenance.signing import public_jwk

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [public_jwk(other.public_key())]}))
    code, out, _ = await run_cli("--keys", str(keys), router.url + "/")
    assert code == 1
    assert "signature:  KEY UNKNOWN" in out
    assert "not among the 1 published keys" in out


async def test_unreachable_url_is_a_clear_error() -> None:
    code, _, err = await run_cli("http://127.0.0.1:9/")
    assert code == 1
    assert "cannot fetch http://127.0.0.1:9/" in err
    assert "Traceback" not in err
    code, _, err = await run_cli("ftp://example.org/")
    assert code == 1 and "not an http(s) URL" in err


def test_dev_source_must_be_a_directory_and_enables_provenance(tmp_path: Path) -> None:
    from router.cli import dev_config, main

    assert main(["dev", "--source", str(tmp_path / "nope"), "http://127.0.0.1:9"]) == 1
    config = dev_config(None, "127.0.0.1:0", "127.0.0.1:0", "/src")
    plugins = {plugin.name: plugin.config for plugin in config.plugins}
    assert plugins["provenance"] == {"source_dir": "/src"}


async def test_trace_id_is_shown_and_signed(backend: Backend, key_file: Path) -> None:
    settings = config(backend, key_file)
    # Provenance listed first: it still signs the traceresponse the tracing plugin makes.
    settings["plugins"].append({"name": "tracing", "config": {"exporter": "none"}})
    async with run_router(settings) as running:
        result = await inspect(running.url + "/traced")
    assert result.signature.result == "valid", result.signature.reason
    assert '"traceresponse"' in result.signature.covered
    assert result.trace_id is not None and len(result.trace_id) == 32
    assert result.traceresponse is not None and result.trace_id in result.traceresponse
