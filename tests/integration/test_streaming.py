"""Bodies stream through the router in both directions with bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from aiohttp import ClientSession, ClientTimeout

from router.testing import Backend, run_router

PATTERN = bytes(range(256)) * 256  # 64 KiB, the backend's /bytes pattern


def expected_sha(size: int) -> str:
    digest = hashlib.sha256()
    remaining = size
    while remaining:
        piece = PATTERN[: min(len(PATTERN), remaining)]
        digest.update(piece)
        remaining -= len(piece)
    return digest.hexdigest()


async def pattern_body(size: int) -> AsyncIterator[bytes]:
    remaining = size
    while remaining:
        piece = PATTERN[: min(len(PATTERN), remaining)]
        remaining -= len(piece)
        yield piece


@pytest.mark.parametrize("chunked", [False, True])
async def test_download_streams_intact(
    backend: Backend, client: ClientSession, chunked: bool
) -> None:
    size = 32 * 1024 * 1024 + 7
    config = {"routes": [{"name": "app", "upstreams": [{"url": backend.url}]}]}
    async with run_router(config) as router:
        url = f"{router.url}/bytes/{size}" + ("?chunked=1" if chunked else "")
        async with client.get(url) as response:
            assert response.status == 200
            assert (response.content_length is None) == chunked
            digest = hashlib.sha256()
            async for chunk in response.content.iter_any():
                digest.update(chunk)
    assert digest.hexdigest() == expected_sha(size)


async def test_upload_streams_intact(backend: Backend, client: ClientSession) -> None:
    size = 48 * 1024 * 1024 + 3
    config = {
        "limits": {"max_body_size": "1GiB"},
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }
    async with run_router(config) as router:
        async with client.post(router.url + "/upload", data=pattern_body(size)) as response:
            assert response.status == 200
            document = await response.json()
    assert document == {"size": size, "sha256": expected_sha(size)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_one_gib_each_way_with_flat_router_memory(
    backend: Backend, client: ClientSession, tmp_path: Path
) -> None:
    """The router runs as its own process so its memory can be read alone."""
    port, admin = _free_port(), _free_port()
    config = tmp_path / "router.yaml"
    config.write_text(
        f"listener: {{listen: '127.0.0.1:{port}'}}\n"
        f"admin: {{listen: '127.0.0.1:{admin}'}}\n"
        "access_log: {enabled: false}\n"
        "limits: {max_body_size: 2GiB}\n"
        f"routes: [{{name: app, upstreams: [{{url: '{backend.url}'}}]}}]\n"
    )
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                async with client.get(f"http://127.0.0.1:{admin}/readyz") as ready:
                    if ready.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "router did not become ready"
            await asyncio.sleep(0.1)
        router = psutil.Process(process.pid)
        baseline = router.memory_info().rss
        peak = baseline
        size = 1024**3
        timeout = ClientTimeout(total=None, sock_read=60)

        async def watch_memory() -> None:
            nonlocal peak
            while True:
                peak = max(peak, router.memory_info().rss)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_memory())
        try:
            async with client.get(
                f"http://127.0.0.1:{port}/bytes/{size}", timeout=timeout
            ) as response:
                received = 0
                async for chunk in response.content.iter_any():
                    received += len(chunk)
            assert received == size
            async with client.post(
                f"http://127.0.0.1:{port}/upload", data=pattern_body(size), timeout=timeout
            ) as response:
                assert (await response.json())["size"] == size
        finally:
            watcher.cancel()
        growth = peak - baseline
        assert growth < 64 * 1024 * 1024, f"router memory grew by {growth / 2**20:.0f} MiB"
    finally:
        process.terminate()
        process.wait(10)
        assert process.returncode == 0, stderr_path.read_text()
