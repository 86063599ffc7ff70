"""``workers > 1``: supervise worker processes that share the public port.

Each worker is ``commons-router serve --worker-index I`` binding the public port with
SO_REUSEPORT and serving its admin app on a private Unix socket. The supervisor owns the
admin listener: /healthz and /readyz ask every worker, /metrics sums the workers' counters
(and keeps what exited workers had counted, so counters never go backwards), / and /status
merge every worker, /routes shows the first that answers and lists them all. Plugins
whose providers are shared (the Kubernetes watches) run once, in the supervisor, which
relays their routes to every worker (:mod:`router.shared_providers`).
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
from typing import Any

import orjson
import uvloop
from aiohttp import ClientError, ClientSession, ClientTimeout, UnixConnector, web

from router.admin import html_page, wants_json
from router.admin_page import merge_status, render_html
from router.config.loader import ConfigError, LoadedConfig, report_invalid_config
from router.config.types import split_host_port
from router.observability.metrics import CONTENT_TYPE
from router.shared_providers import SharedProviders

logger = logging.getLogger("commons_router.workers")

_ASK_TIMEOUT = ClientTimeout(total=5.0)


# A worker that ran this long before dying is restarted at once, not after a back-off.
_STABLE_AFTER = 60.0
# Gauges that describe one process's state rather than an amount: merged with max, not sum.
_MAX_SERIES = frozenset(
    {
        "commons_router_route_table_generation",
        "commons_router_tls_certificate_expiry_timestamp_seconds",
        "commons_router_build_info",
        "commons_router_config_last_reload_success_timestamp_seconds",
        "process_start_time_seconds",
        "process_max_fds",
    }
)
_MIN_SERIES = frozenset({"commons_router_config_last_reload_successful"})
# Families whose samples only ever grow in one process: what a dead worker had counted is
# kept, so merged counters never go backwards when a worker is restarted.
_MONOTONIC_TYPES = frozenset({"counter", "histogram", "summary"})
# How often the supervisor reads every worker's counters even when nobody asks: a worker
# that dies loses at most this much of its counts.
_REFRESH_INTERVAL = 5.0


class Worker:
    def __init__(self, index: int, socket_path: str) -> None:
        self.index = index
        self.socket_path = socket_path
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.restarts = 0
        """Restarts in a row, for the back-off (0 again after a stable run)."""
        self.restarts_total = 0
        self.last_metrics = ""
        """The last /metrics text this worker's current process answered."""

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


class _Family:
    __slots__ = ("help", "kind", "samples", "type")

    def __init__(self) -> None:
        self.help = ""
        self.type = ""
        self.kind = "untyped"
        self.samples: dict[str, float] = {}


def _families(texts: list[str]) -> dict[str, _Family]:
    """Parse and merge: samples with the same name and labels are summed (max or min for
    the state gauges above); every family keeps its lines together."""
    families: dict[str, _Family] = {}
    for text in texts:
        current: _Family | None = None
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                parts = line.split(" ", 3)
                current = families.setdefault(parts[2], _Family())
                if parts[1] == "HELP":
                    current.help = current.help or line
                else:
                    current.type = current.type or line
                    current.kind = parts[3].strip() if len(parts) > 3 else "untyped"
                continue
            if line.startswith("#"):
                continue
            series, _, text_value = line.rpartition(" ")
            name = series.partition("{")[0]
            family = current if current is not None else families.setdefault(name, _Family())
            value = float(text_value)
            before = family.samples.get(series)
            if before is None:
                family.samples[series] = value
            elif name in _MAX_SERIES:
                family.samples[series] = max(before, value)
            elif name in _MIN_SERIES:
                family.samples[series] = min(before, value)
            else:
                family.samples[series] = before + value
    return families


def _render(families: dict[str, _Family]) -> str:
    lines = []
    for family in families.values():
        if family.help:
            lines.append(family.help)
        if family.type:
            lines.append(family.type)
        for series, total in family.samples.items():
            lines.append(f"{series} {int(total) if total.is_integer() else total}")
    return "\n".join(lines) + "\n"


def merge_metrics(texts: list[str]) -> str:
    """Sum samples with the same name and labels; keep HELP/TYPE lines once."""
    return _render(_families(texts))


def monotonic_part(text: str) -> str:
    """Only the counter, histogram and summary families of a /metrics text."""
    families = _families([text])
    return _render({k: f for k, f in families.items() if f.kind in _MONOTONIC_TYPES})


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
        self.retired_metrics = ""
        """Counters of worker processes that have exited, summed."""
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
            self._retire(worker)
            ran = asyncio.get_running_loop().time() - worker.started_at
            worker.restarts = 0 if ran >= _STABLE_AFTER else worker.restarts + 1
            delay = 0.0 if worker.restarts == 0 else min(0.5 * 2.0 ** (worker.restarts - 1), 30.0)
            logger.error("worker %d exited with %s; restarting in %.1fs", worker.index, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return
            await self._spawn(worker)
            worker.restarts_total += 1
            if self._stop.is_set():
                # SIGTERM arrived while this worker was being started.
                self._signal_workers(signal.SIGTERM)

    def _retire(self, worker: Worker) -> None:
        if worker.last_metrics:
            retired = monotonic_part(worker.last_metrics)
            self.retired_metrics = merge_metrics([self.retired_metrics, retired])
            worker.last_metrics = ""

    async def _read_metrics(self, worker: Worker) -> str:
        """The worker's /metrics now, or what it answered last if it cannot answer now."""
        process = worker.process
        status, text = await self._ask(worker, "/metrics")
        # Only an answer from the process that is running now: one from a process that
        # exited meanwhile is already counted in the retired totals.
        if status == 200 and worker.process is process and worker.alive:
            worker.last_metrics = text
        return worker.last_metrics

    async def metrics_text(self) -> str:
        texts = await asyncio.gather(*(self._read_metrics(w) for w in self.workers))
        return merge_metrics([*texts, self.retired_metrics, self._own_metrics()])

    async def status_document(self) -> dict[str, Any]:
        answers = await asyncio.gather(*(self._ask(w, "/status") for w in self.workers))
        documents, workers = [], []
        for worker, (code, text) in zip(self.workers, answers, strict=True):
            document = _json_object(text) if code == 200 else None
            if document is not None:
                documents.append(document)
            workers.append(
                {
                    "index": worker.index,
                    "pid": worker.process.pid if worker.alive and worker.process else None,
                    "answered": document is not None,
                    "restarts": worker.restarts_total,
                    "generation": document.get("generation") if document else None,
                }
            )
        return merge_status(documents, workers)

    async def _refresh_metrics(self) -> None:
        while True:
            await asyncio.sleep(_REFRESH_INTERVAL)
            await asyncio.gather(*(self._read_metrics(w) for w in self.workers))

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
            text = await self.metrics_text()
            return web.Response(
                body=text.encode(),
                headers={"Content-Type": CONTENT_TYPE, "X-Content-Type-Options": "nosniff"},
            )

        async def routes(request: web.Request) -> web.Response:
            # The first worker that answers; all of them are listed under "workers".
            document = await self.status_document()
            for worker in self.workers:
                status, text = await self._ask(worker, "/routes")
                answer = _json_object(text) if status == 200 else None
                if answer is not None:
                    answer["workers"] = document["workers"]
                    return web.json_response(answer, dumps=_dumps)
            return web.json_response({"workers": document["workers"]}, status=503, dumps=_dumps)

        async def home(request: web.Request) -> web.Response:
            document = await self.status_document()
            if wants_json(request):
                return web.json_response(document, dumps=_dumps)
            return html_page(render_html(document))

        async def status(request: web.Request) -> web.Response:
            return web.json_response(await self.status_document(), dumps=_dumps)

        app = web.Application()
        app.router.add_get("/", home)
        app.router.add_get("/status", status)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/routes", routes)
        return app

    def _own_metrics(self) -> str:
        lines = [
            "# HELP commons_router_worker_restarts_total Worker processes restarted after "
            "they died, by worker.\n",
            "# TYPE commons_router_worker_restarts_total counter\n",
        ]
        lines.extend(
            f'commons_router_worker_restarts_total{{worker="{w.index}"}} {w.restarts_total}\n'
            for w in self.workers
        )
        return "".join(lines)

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
        loop.add_signal_handler(signal.SIGUSR1, self._signal_workers, signal.SIGUSR1)
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
            refresh = asyncio.create_task(self._refresh_metrics())
            logger.info("supervising %d workers", len(self.workers))
            await self._stop.wait()
            self._signal_workers(signal.SIGTERM)
            await asyncio.gather(*watchers, return_exceptions=True)
            refresh.cancel()
            return 0
        finally:
            self.stopping = True
            self._signal_workers(signal.SIGTERM)
            await self.shared.stop()
            await runner.cleanup()
            shutil.rmtree(self.runtime_dir, ignore_errors=True)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


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
