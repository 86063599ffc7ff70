"""Flat memory: 1 GiB down and 1 GiB up through commons-router, watching its RSS.

    .venv/bin/python benchmarks/memory.py [--size 1GiB] [--json FILE]

A local aiohttp backend (in this process) generates the download and counts the upload;
commons-router (one worker, access log on, its own process) sits in between. While each
transfer runs, the router's resident set size is sampled every 20 ms with psutil; the
kernel's high-water mark (VmHWM) is read before and after as well, so a spike between two
samples is not missed. Three transfers: a download, an upload with Content-Length, and a
chunked upload (no length). PASS when the router's peak RSS grows by less than
--max-growth (default 64 MiB) over its RSS before the transfers, i.e. memory stays flat
instead of growing with the body size. Exit status: 0 when everything ran (whatever the
verdict), 2 when a transfer failed or the router did not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import uvloop
from aiohttp import ClientSession, ClientTimeout, web

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CHUNK = 256 * 1024
PATTERN = bytes(range(256)) * (CHUNK // 256)
MIB = 1024 * 1024


@dataclass
class Phase:
    name: str
    bytes: int
    seconds: float
    rss_before_mib: float
    peak_rss_mib: float
    rss_after_mib: float
    hwm_before_mib: float
    hwm_after_mib: float

    @property
    def growth_mib(self) -> float:
        return max(self.peak_rss_mib, self.hwm_after_mib) - self.rss_before_mib


def parse_size(text: str) -> int:
    units = {
        "": 1,
        "k": 1024,
        "kib": 1024,
        "m": MIB,
        "mib": MIB,
        "g": 1024 * MIB,
        "gib": 1024 * MIB,
    }
    number = text.rstrip("kKmMgGiIbB")
    unit = text[len(number) :].lower()
    if unit not in units:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use e.g. 1GiB, 512MiB")
    return int(number) * units[unit]


def hwm_mib(pid: int) -> float:
    """The kernel's peak RSS (VmHWM) of ``pid``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- backend ---------------------------------------------------------------------------


async def backend_handler(request: web.BaseRequest) -> web.StreamResponse:
    if request.method == "GET" and request.path.startswith("/download/"):
        size = int(request.path.rsplit("/", 1)[1])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        remaining = size
        while remaining > 0:
            chunk = PATTERN if remaining >= CHUNK else PATTERN[:remaining]
            await response.write(chunk)
            remaining -= len(chunk)
        await response.write_eof()
        return response
    if request.method in ("PUT", "POST") and request.path == "/upload":
        received = 0
        async for chunk in request.content.iter_any():
            received += len(chunk)
        return web.json_response({"received": received})
    if request.path == "/":
        return web.Response(text="ok\n")
    return web.Response(status=404, text="not found\n")


# -- router ----------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def router_command() -> list[str]:
    script = Path(sys.executable).parent / "commons-router"
    return [str(script)] if script.exists() else [sys.executable, "-m", "router"]


async def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    async with ClientSession(timeout=ClientTimeout(total=1)) as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"router exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"router not ready at {url}:\n{log.read_text()[-2000:]}")


# -- transfers -------------------------------------------------------------------------


class Sampler:
    """Samples a process's RSS in the background; ``peak`` since the last ``reset``."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def reset(self) -> None:
        self.peak = self.rss()

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.rss())
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def body(size: int) -> AsyncIterator[bytes]:
    remaining = size
    while remaining > 0:
        chunk = PATTERN if remaining >= CHUNK else PATTERN[:remaining]
        remaining -= len(chunk)
        yield chunk


async def download(session: ClientSession, url: str, size: int) -> int:
    received = 0
    async with session.get(f"{url}/download/{size}") as response:
        if response.status != 200:
            raise RuntimeError(f"download answered {response.status}")
        async for chunk in response.content.iter_chunked(CHUNK):
            received += len(chunk)
    return received


async def upload(session: ClientSession, url: str, size: int, with_length: bool) -> int:
    headers = {"Content-Length": str(size)} if with_length else {}
    async with session.put(f"{url}/upload", data=body(size), headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"upload answered {response.status}: {await response.text()}")
        document = await response.json()
    return int(document["received"])


async def measure(
    name: str, sampler: Sampler, pid: int, transfer: Callable[[], Awaitable[int]]
) -> tuple[Phase, int]:
    await asyncio.sleep(0.3)
    before = sampler.rss()
    hwm_before = hwm_mib(pid)
    sampler.reset()
    started = time.perf_counter()
    moved = await transfer()
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.3)
    phase = Phase(
        name=name,
        bytes=moved,
        seconds=seconds,
        rss_before_mib=before / MIB,
        peak_rss_mib=max(sampler.peak, sampler.rss()) / MIB,
        rss_after_mib=sampler.rss() / MIB,
        hwm_before_mib=hwm_before,
        hwm_after_mib=hwm_mib(pid),
    )
    print(
        f"  {name:<28} {moved / MIB:8.0f} MiB in {seconds:5.1f} s "
        f"({moved / MIB / seconds:6.0f} MiB/s)  RSS {phase.rss_before_mib:6.1f} -> peak "
        f"{phase.peak_rss_mib:6.1f} -> {phase.rss_after_mib:6.1f} MiB  (VmHWM "
        f"{phase.hwm_before_mib:.1f} -> {phase.hwm_after_mib:.1f} MiB)",
        flush=True,
    )
    return phase, moved


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    runner = web.ServerRunner(web.Server(backend_handler, access_log=None))
    await runner.setup()
    backend_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", backend_port).start()

    port, admin = free_port(), free_port()
    config = workdir / "router.yaml"
    config.write_text(
        json.dumps(
            {
                "listener": {"listen": f"127.0.0.1:{port}"},
                "admin": {"listen": f"127.0.0.1:{admin}"},
                "workers": 1,
                "drain": {"delay": 0, "grace": 5},
                "access_log": {"path": str(workdir / "access.log")},
                "limits": {"max_body_size": args.size + MIB},
                "routes": [
                    {"name": "memory", "upstreams": [{"url": f"http://127.0.0.1:{backend_port}"}]}
                ],
            }
        )
    )
    log = workdir / "router.log"
    with log.open("wb") as log_stream:
        proc = subprocess.Popen(
            [*router_command(), "serve", "--config", str(config)],
            stdout=log_stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )
    phases: list[Phase] = []
    try:
        await wait_ready(proc, f"http://127.0.0.1:{admin}/readyz", log)
        url = f"http://127.0.0.1:{port}"
        sampler = Sampler(proc.pid)
        sampler.start()
        size = args.size
        async with ClientSession(timeout=ClientTimeout(total=None), auto_decompress=False) as s:
            # Warm up: a few small transfers, so lazy imports and buffers exist before "before".
            for _ in range(3):
                await download(s, url, 4 * MIB)
                await upload(s, url, 4 * MIB, with_length=True)
            start_rss = sampler.rss() / MIB
            print(
                f"router pid {proc.pid}: RSS {start_rss:.1f} MiB after warm-up, "
                f"VmHWM {hwm_mib(proc.pid):.1f} MiB",
                flush=True,
            )
            transfers: list[tuple[str, Callable[[], Awaitable[int]]]] = [
                ("download", lambda: download(s, url, size)),
                ("upload (Content-Length)", lambda: upload(s, url, size, with_length=True)),
                ("upload (chunked)", lambda: upload(s, url, size, with_length=False)),
            ]
            for name, transfer in transfers:
                phase, moved = await measure(name, sampler, proc.pid, transfer)
                if moved != size:
                    raise RuntimeError(f"{name}: moved {moved} bytes, expected {size}")
                phases.append(phase)
        await sampler.stop()
        if proc.poll() is not None:
            raise RuntimeError(f"router died:\n{log.read_text()[-2000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        await runner.cleanup()

    baseline = phases[0].rss_before_mib
    worst = max(max(p.peak_rss_mib, p.hwm_after_mib) for p in phases) - baseline
    passed = worst < args.max_growth
    print()
    print(
        f"router RSS before the transfers {baseline:.1f} MiB; largest peak growth during "
        f"{args.size / MIB:.0f} MiB transfers: {worst:+.1f} MiB "
        f"(limit {args.max_growth:.0f} MiB): {'PASS' if passed else 'FAIL'}"
    )
    return {
        "size_bytes": args.size,
        "rss_before_mib": round(baseline, 1),
        "max_peak_growth_mib": round(worst, 1),
        "limit_mib": args.max_growth,
        "pass": passed,
        "phases": [{**asdict(p), "growth_mib": round(p.growth_mib, 1)} for p in phases],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=1024 * MIB, help="default 1GiB")
    parser.add_argument("--max-growth", type=float, default=64.0, metavar="MIB")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="commons-router-memory-") as tmp:
        try:
            document = uvloop.run(run(args, Path(tmp)))
        except (RuntimeError, OSError) as exc:
            print(f"benchmarks/memory.py: {exc}", file=sys.stderr)
            return 2
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
