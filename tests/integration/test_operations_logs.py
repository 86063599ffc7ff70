"""The router's own log (level, JSON after OpenTelemetry, repeats limited) and the access
log (OpenTelemetry-named fields, bounded queue, counted write errors, SIGUSR1 reopen)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession, TCPConnector
from prometheus_client.parser import text_string_to_metric_families

from router.observability.accesslog import AccessLog
from router.observability.logs import JsonFormatter, RepeatLimiter
from router.testing import Backend, run_router
from tests.support.processes import base_config, eventually, free_port, get, started, write_config


async def test_access_log_has_protocol_user_agent_redacted_query_and_timings(
    backend: Backend, client: ClientSession
) -> None:
    routes = [{"name": "app", "upstreams": [{"url": backend.url}]}]
    async with run_router({"routes": routes}) as router:
        status, _, _ = await get(
            client,
            router.url + "/search?token=s3cret&q=shoes&flag",
            headers={"User-Agent": "probe/1.0"},
        )
        assert status == 200
        (line,) = [e for e in await router.access_log() if e["path"] == "/search"]
    assert line["network.protocol.version"] == "1.1"
    assert line["user_agent.original"] == "probe/1.0"
    assert line["url.query"] == "token=REDACTED&q=REDACTED&flag"
    assert "s3cret" not in json.dumps(line)
    assert line["upstream"] == backend.url
    assert line["upstream_duration_ms"] >= 0
    assert line["router_duration_ms"] >= 0
    assert line["upstream_duration_ms"] + line["router_duration_ms"] <= line["duration_ms"] + 0.01
    assert "error" not in line


async def test_access_log_omits_the_query_when_told(
    backend: Backend, client: ClientSession
) -> None:
    routes = [{"name": "app", "upstreams": [{"url": backend.url}]}]
    async with run_router({"routes": routes, "access_log": {"query": "omit"}}) as router:
        await get(client, router.url + "/p?token=s3cret")
        (line,) = [e for e in await router.access_log() if e["path"] == "/p"]
    assert "url.query" not in line


async def test_a_failed_upstream_is_logged_with_error_type_endpoint_and_retries(
    client: ClientSession,
) -> None:
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    routes = [{"name": "down", "upstreams": [{"url": url} for url in dead], "retries": 1}]
    async with run_router({"routes": routes}) as router:
        status, _, _ = await get(client, router.url + "/x")
        assert status == 502
        (line,) = [e for e in await router.access_log() if e["path"] == "/x"]
    assert line["error"] == "connect"
    assert line["upstream"] in dead
    assert line["http.request.resend_count"] == 1


@contextlib.asynccontextmanager
async def resetting_endpoint(hold: int) -> AsyncIterator[str]:
    """Reads each request, then closes every connection at once when ``hold`` are open:
    that many requests fail on one endpoint after it had them all."""
    writers: list[asyncio.StreamWriter] = []
    full = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writers.append(writer)
        if len(writers) >= hold:
            full.set()
        await full.wait()
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = float(sample.value)
    return found


async def test_one_endpoint_reset_mid_request_is_one_ejection_of_kind_reset(
    client: ClientSession,
) -> None:
    async with resetting_endpoint(hold=6) as url:
        routes = [
            {
                "name": "flaky",
                "upstreams": [{"url": url}],
                "retries": 0,
                "health": {"max_failures": 2, "ejection": "60s"},
            }
        ]
        async with run_router({"routes": routes}) as router:
            answers = await asyncio.gather(*(get(client, router.url + "/") for _ in range(6)))
            assert [status for status, _, _ in answers] == [502] * 6
            _, text, _ = await get(client, router.admin_url + "/metrics")
            log = await router.access_log()
    assert metric(text, "commons_router_endpoint_ejections_total") == 1
    errors = samples(text, "commons_router_upstream_errors_total")
    assert errors == {(("kind", "reset"), ("route", "flaky")): 6}
    assert {line["error"] for line in log} == {"reset"}


def test_repeated_warnings_are_written_once_then_with_a_count() -> None:
    now = [0.0]
    limiter = RepeatLimiter(window=10.0, burst=5, clock=lambda: now[0])

    def record(arg: str, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("sessions", level, "x.py", 1, "lookup failed: %s", (arg,), None)

    assert all(limiter.filter(record(f"timeout {i}")) for i in range(1, 6))
    assert not any(limiter.filter(record(f"timeout {i}")) for i in range(6, 2201))
    assert limiter.filter(record("other", logging.INFO))  # below WARNING: never limited
    now[0] = 10.5
    later = record("timeout 2201")
    assert limiter.filter(later)
    assert later.repeated == 2195  # type: ignore[attr-defined]
    now[0] = 30.0
    quiet = record("timeout 2202")
    assert limiter.filter(quiet)
    assert not hasattr(quiet, "repeated")


def test_json_lines_carry_the_active_span_ids() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    formatter = JsonFormatter()
    with tracer.start_as_current_span("request") as span:
        record = logging.LogRecord("x", logging.ERROR, "x.py", 1, "boom %d", (1,), None)
        line = json.loads(formatter.format(record))
        context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert line["severity_text"] == "ERROR"
    assert line["severity_number"] == 17
    assert line["body"] == "boom 1"
    outside = json.loads(formatter.format(record))
    assert "trace_id" not in outside


async def test_serve_writes_json_lines_at_the_configured_level(
    tmp_path: Path, client: ClientSession
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = base_config(
        tmp_path,
        [{"name": "down", "upstreams": [{"url": dead}], "retries": 0}],
        log={"format": "json", "level": "warning"},
        plugins=[{"name": "tracing", "config": {"exporter": "none"}}],
    )
    path = tmp_path / "router.yaml"
    write_config(path, config)
    public, admin = f"http://{config['listener']['listen']}", f"http://{config['admin']['listen']}"
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        for _ in range(20):
            assert (await get(client, public + "/"))[0] in (502, 503)

        def failures() -> list[dict[str, object]]:
            lines = [json.loads(line) for line in router.stderr().splitlines() if line]
            return [line for line in lines if "failed (connect)" in str(line["body"])]

        async def logged() -> list[dict[str, object]]:
            return failures()

        line = (await eventually(logged, message="failure logged"))[0]
        await asyncio.sleep(0.3)
        assert len(failures()) == 5  # 20 failures, five lines: the rest are counted
        stderr = router.stderr()
        await asyncio.sleep(0.2)
        access_log = [json.loads(t) for t in (tmp_path / "access.log").read_text().splitlines()]
    assert line["severity_text"] == "WARNING"
    assert line["severity_number"] == 13
    attributes = line["attributes"]
    assert isinstance(attributes, dict)
    assert attributes["logger.name"] == "commons_router.proxy"
    # The line names the request it was written for, and its trace.
    (logged,) = [e for e in access_log if e["request_id"] == attributes["request_id"]]
    assert logged["error"] == "connect"
    assert line["trace_id"] == logged["trace_id"]
    assert dead.removeprefix("http://") in str(line["body"])
    assert str(line["timestamp"]).endswith("Z")
    # level warning: the INFO start-up line is not written; every line is JSON.
    assert "listening on" not in stderr
    assert all(json.loads(text) for text in stderr.splitlines() if text)


def test_writer_that_falls_behind_drops_and_counts_lines(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)

    async def scenario() -> tuple[int, int]:
        log = AccessLog(str(fifo), max_buffered_lines=100, max_queued_batches=2)
        log.start()
        line = {"path": "/" + "x" * 1000}
        # Nobody reads the pipe: it fills (64 KiB), the writer blocks, batches pile up.
        for _ in range(40):
            for _ in range(150):
                log.write(line)
            log._flush()
            await asyncio.sleep(0.01)
        dropped = log.dropped

        async def drain() -> None:
            while True:
                try:
                    if not os.read(reader, 1 << 16):
                        return  # the writer closed its end
                except BlockingIOError:
                    await asyncio.sleep(0.005)

        drainer = asyncio.create_task(drain())
        await log.stop()
        await asyncio.wait_for(drainer, 10)
        return dropped, log.write_errors

    dropped, write_errors = asyncio.run(scenario())
    os.close(reader)
    # 40 rounds of 150 lines: 50 per round over the buffer bound, and whole batches once
    # two were waiting for the blocked writer.
    assert dropped >= 40 * 50 + 100
    assert write_errors == 0


async def test_write_errors_are_counted(backend: Backend, client: ClientSession) -> None:
    routes = [{"name": "app", "upstreams": [{"url": backend.url}]}]
    async with run_router({"routes": routes, "access_log": {"path": "/dev/full"}}) as router:
        for _ in range(3):
            await get(client, router.url + "/")

        async def counted() -> float:
            _, text, _ = await get(client, router.admin_url + "/metrics")
            return metric(text, "commons_router_access_log_write_errors_total")

        assert await eventually(counted, message="write errors counted") >= 1


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigusr1_reopens_the_access_log_after_rotation(
    tmp_path: Path, backend: Backend, client: ClientSession, workers: int
) -> None:
    config = base_config(
        tmp_path, [{"name": "app", "upstreams": [{"url": backend.url}]}], workers=workers
    )
    path = tmp_path / "router.yaml"
    write_config(path, config)
    public, admin = f"http://{config['listener']['listen']}", f"http://{config['admin']['listen']}"
    log = tmp_path / "access.log"
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        await get(client, public + "/before")
        await eventually(lambda: _contains(log, "/before"), message="first line")
        log.rename(tmp_path / "access.log.1")
        router.send(signal.SIGUSR1)
        await eventually(_exists(log), message="log reopened")
        await asyncio.sleep(0.5)  # every worker has had the signal
        async with ClientSession(connector=TCPConnector(force_close=True)) as fresh:
            for index in range(10):  # new connections: the kernel spreads them over workers
                assert (await get(fresh, f"{public}/after-{index}"))[0] == 200
        # Each worker flushes its own lines on its own timer: wait for all of them, not for
        # the last request's (another worker's lines may still be on their way).
        async def all_written() -> bool:
            return log.exists() and all(f"/after-{i}" in log.read_text() for i in range(10))

        await eventually(all_written, message="lines in the new file")
    await asyncio.sleep(0.2)
    assert "/after" not in (tmp_path / "access.log.1").read_text()
    assert all(f"/after-{index}" in log.read_text() for index in range(10))


async def _contains(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text()


def _exists(path: Path) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return path.exists()

    return probe
