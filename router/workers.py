"""``workers > 1``: supervise worker processes that share the public port.

Each worker is ``commons-router serve --worker-index I`` binding the public port with
SO_REUSEPORT and serving its admin app on a private Unix socket. The supervisor owns the
admin listener: /healthz and /readyz ask every worker, /metrics sums the workers' counters,
/routes shows worker 0's table. Plugins whose providers are shared (the Kubernetes
watches) run once, in the supervisor, which relays their routes to every worker
(:mod:`router.shared_providers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import uvloop
from aiohttp import ClientError, ClientSession, ClientTimeout, UnixConnector, web

from router.config.loader import ConfigError, LoadedConfig, report_invalid_config
from router.config.types import split_host_port
from router.shared_providers import SharedProviders

logger = logging.getLogger("commons_router.workers")

_ASK_TIMEOUT = ClientTimeout(total=5.0)


# A worker that ran this long before dying is restarted at once, not after a back-off.
_STABLE_AFTER = 60.0
# Gauges that describe one process's state rather than an amount: merged with max, not sum.
_MAX_SERIES = frozenset({"commons_router_route_table_generation"})


class Worker:
    def __init__(self, index: int, socket_path: str) -> None:
        self.index = index
        self.socket_path = socket_path
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.restarts = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


def merge_metrics(texts: list[str]) -> str:
    """Sum samples with the same name and labels; keep HELP/TYPE lines once."""
    order: list[str] = []
    values: dict[str, float] = {}
    for text in texts:
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                if line not in values and line not in order:
                    order.append(line)
                continue
            series, _, value = line.rpartition(" ")
            if series not in values:
                order.append(series)
                values[series] = float(value)
            elif series.partition("{")[0] in _MAX_SERIES:
                values[series] = max(values[series], float(value))
            else:
                values[series] += float(value)
    lines = []
    for key in order:
        if key.startswith("#"):
            lines.append(key)
        else:
            total = values[key]
            lines.append(f"{key} {int(total) if total.is_integer() else total}")
    return "\n".join(lines) + "\n"


class Supervisor:
    def __init__(self, loaded: LoadedConfig, config_path: Path) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.config_path = config_path
        self.runtime_dir = tempfile.mkdtemp(prefix="commons-router-")
        self.workers = [
            Worker(i, str(Path(self.runtime_dir) / f"worker-{i}.sock"))
            for i in range(self.config.workers)
        ]
        self.stopping = False
        self._stop = asyncio.Event()
        self.shared = SharedProviders(loaded)
        self.routes_socket: str | None = None

    async def _spawn(self, worker: Worker) -> None:
        worker.started_at = asyncio.get_running_loop().time()
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "router",
            "serve",
            "--config",
            str(self.config_path),
            "--worker-index",
            str(worker.index),
            "--admin-socket",
            worker.socket_path,
            *(["--routes-socket", self.routes_socket] if self.routes_socket else []),
        )

    async def _watch(self, worker: Worker) -> None:
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self.stopping:
                return
            ran = asyncio.get_running_loop().time() - worker.started_at
            worker.restarts = 0 if ran >= _STABLE_AFTER else worker.restarts + 1
            delay = 0.0 if worker.restarts == 0 else min(0.5 * 2.0 ** (worker.restarts - 1), 30.0)
            logger.error("worker %d exited with %s; restarting in %.1fs", worker.index, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return
            await self._spawn(worker)
            if self._stop.is_set():
                # SIGTERM arrived while this worker was being started.
                self._signal_workers(signal.SIGTERM)

    async def _ask(self, worker: Worker, path: str) -> tuple[int, str]:
        if not worker.alive:
            return 503, "worker not running"
        try:
            async with (
                ClientSession(
                    connector=UnixConnector(path=worker.socket_path), timeout=_ASK_TIMEOUT
                ) as session,
                session.get(f"http://worker{path}") as response,
            ):
                return response.status, await response.text()
        except (ClientError, OSError, TimeoutError) as exc:
            return 503, f"worker {worker.index} did not answer: {exc}"

    def admin_app(self) -> web.Application:
        async def healthz(request: web.Request) -> web.Response:
            dead = [w.index for w in self.workers if not w.alive]
            if dead:
                return web.Response(status=503, text=f"workers not running: {dead}\n")
            return web.Response(text="ok\n")

        async def readyz(request: web.Request) -> web.Response:
            if self.stopping:
                return web.Response(status=503, text="draining\n")
            answers = await asyncio.gather(*(self._ask(w, "/readyz") for w in self.workers))
            if any(status != 200 for status, _ in answers):
                return web.Response(status=503, text="not all workers are ready\n")
            return web.Response(text="ready\n")

        async def metrics(request: web.Request) -> web.Response:
            answers = await asyncio.gather(*(self._ask(w, "/metrics") for w in self.workers))
            texts = [text for status, text in answers if status == 200]
            return web.Response(text=merge_metrics(texts), content_type="text/plain")

        async def routes(request: web.Request) -> web.Response:
            status, text = await self._ask(self.workers[0], "/routes")
            return web.Response(status=status, text=text, content_type="application/json")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/routes", routes)
        return app

    def _request_stop(self) -> None:
        self.stopping = True
        self._stop.set()

    def _signal_workers(self, signum: int) -> None:
        for worker in self.workers:
            if worker.alive:
                assert worker.process is not None
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._request_stop)
        loop.add_signal_handler(signal.SIGINT, self._request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._signal_workers, signal.SIGHUP)
        runner = web.AppRunner(self.admin_app(), access_log=None)
        await runner.setup()
        try:
            host, port = split_host_port(self.config.admin.listen)
            await web.TCPSite(runner, host or None, port).start()
            routes_socket = str(Path(self.runtime_dir) / "routes.sock")
            if await self.shared.start(routes_socket):
                self.routes_socket = routes_socket
            for worker in self.workers:
                await self._spawn(worker)
            watchers = [asyncio.create_task(self._watch(w)) for w in self.workers]
            logger.info("supervising %d workers", len(self.workers))
            await self._stop.wait()
            self._signal_workers(signal.SIGTERM)
            await asyncio.gather(*watchers, return_exceptions=True)
            return 0
        finally:
            self.stopping = True
            self._signal_workers(signal.SIGTERM)
            await self.shared.stop()
            await runner.cleanup()
            shutil.rmtree(self.runtime_dir, ignore_errors=True)


def supervise(loaded: LoadedConfig, *, config_path: Path | None) -> int:
    if config_path is None:
        print("commons-router: workers > 1 needs a configuration file", file=sys.stderr)
        return 1
    supervisor = Supervisor(loaded, config_path)
    try:
        return uvloop.run(supervisor.run())
    except ConfigError as exc:
        report_invalid_config(exc)
        return 1
    except OSError as exc:
        print(f"commons-router: cannot start: {exc}", file=sys.stderr)
        return 1
