"""Cost of span export: sampling 1.0, 0.1 and 0.01 with a working, a dead and no collector,
against the router without tracing in the same run.

    .venv/bin/python benchmarks/tracing_cost.py [--duration 2] [--rounds 3] [--json FILE]
    .venv/bin/python benchmarks/tracing_cost.py --soak 300     # RSS under a dead collector

Reuses benchmarks/run.py (nginx upstream, wrk, CPU placement, process handling) and the
paired-slice method of benchmarks/features.py: every target runs at once, pinned to the
server CPU; each round loads the baseline, then each target with a baseline slice after
it (B T1 B T2 ... B), ``wrk -t1 -c64 /small``. A target's ratio in a round is its slice
over the mean of the two baseline slices around it; the figures are medians over rounds,
by req/s and by the CPU time the router process used per request (all threads, so
serialization and export count). The baseline is the router with no plugins.

Collectors (each its own process, on the wrk/nginx CPU):

* *working*: a real OTLP/HTTP receiver that parses every request (protobuf) and counts
  the spans (the count is reported);
* *black hole*: accepts connections and never reads or answers (the exporter waits out
  its ``export_timeout`` of 1 s per batch);
* *none*: a closed port (connection refused at once);
* and ``exporter: none`` at 1.0: spans made and ended, never encoded or sent — the
  difference to *working* is the export's share.

After the run it prints each router's RSS. ``--soak SECONDS`` instead loads one router at
sampling 1.0 with a black-hole collector for that long (wrk -c20) and prints its RSS every
30 s. Exit status as for run.py: 0 ran, 1 tools missing, 2 a target failed.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import features  # noqa: E402
import run as bench  # noqa: E402

BASELINE = "router, no tracing"
SMALL = "/small"
SETTLE_S = 1.0
EXPORT_TIMEOUT = "1s"
SOAK_SAMPLE_S = 30.0


def tracing(ratio: float, endpoint: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {"sampling_ratio": ratio, "export_timeout": EXPORT_TIMEOUT}
    if endpoint is None:
        config["exporter"] = "none"
    else:
        config.update(exporter="otlp_http", endpoint=endpoint)
    return {"name": "tracing", "config": config}


def plugin_sets(collectors: dict[str, str]) -> list[tuple[str, list[dict[str, Any]]]]:
    sets: list[tuple[str, list[dict[str, Any]]]] = [(BASELINE, [])]
    for name, endpoint in collectors.items():
        for ratio in (1.0, 0.1, 0.01):
            sets.append((f"{ratio:g}, {name}", [tracing(ratio, endpoint)]))
    sets.append(("1.0, exporter none", [tracing(1.0, None)]))
    return sets


# -- collectors (run as subprocesses of this script) -------------------------------------


def serve_collector(kind: str, port: int) -> None:
    import uvloop

    uvloop.run(_working(port) if kind == "working" else _black_hole(port))


async def _working(port: int) -> None:
    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    received = 0
    answer = ExportTraceServiceResponse().SerializeToString()

    async def traces(request: web.Request) -> web.Response:
        nonlocal received
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received += sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)
        return web.Response(body=answer, content_type="application/x-protobuf")

    async def count(request: web.Request) -> web.Response:
        return web.Response(text=str(received))

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/count", count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def _black_hole(port: int) -> None:
    class Silent(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            transport.pause_reading()  # accepted, never read: the sender's buffers fill

    server = await asyncio.get_running_loop().create_server(Silent, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_collectors(procs: bench.Processes, placement: bench.Placement) -> dict[str, str]:
    endpoints = {}
    for kind in ("working", "black hole"):
        port = bench.free_port()
        procs.start(
            f"collector-{kind.replace(' ', '-')}",
            [
                *placement.prefix(placement.client_cpu),
                sys.executable,
                str(Path(__file__).resolve()),
                "--collector",
                kind,
                "--port",
                str(port),
            ],
        )
        endpoints[kind] = f"http://127.0.0.1:{port}/v1/traces"
    _wait_listening([int(url.split(":")[2].split("/")[0]) for url in endpoints.values()])
    endpoints["none"] = f"http://127.0.0.1:{closed_port()}/v1/traces"
    return endpoints


def _wait_listening(ports: list[int]) -> None:
    deadline = time.monotonic() + 15
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise bench.BenchError(f"collector on {port} did not start") from None
                time.sleep(0.1)


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 1e6


# -- the measurement ---------------------------------------------------------------------


def start_routers(
    procs: bench.Processes,
    workdir: Path,
    placement: bench.Placement,
    upstream: str,
    sets: list[tuple[str, list[dict[str, Any]]]],
) -> list[features.Target]:
    targets = []
    for index, (label, plugins) in enumerate(sets):
        name = f"router-{index}"
        cmd, url, ready = bench.router_with_plugins(workdir, name, upstream, plugins, placement)
        procs.start(name, cmd)
        bench.wait_ready(procs, name, ready)
        bench.verify_bodies(url, label, expect_request_id=True)
        targets.append(features.Target(label, url, procs.procs[name].pid, bool(plugins)))
    return targets


def run_all(args: argparse.Namespace, nginx: str, wrk: str, workdir: Path) -> dict[str, Any]:
    placement = bench.Placement(not args.no_pin)
    script = workdir / "report.lua"
    script.write_text(bench.WRK_DONE_SCRIPT)
    procs = bench.Processes(workdir)
    try:
        upstream = bench.start_nginx(procs, nginx, workdir, placement)
        collectors = start_collectors(procs, placement)
        if args.soak:
            return soak(args, wrk, workdir, placement, procs, upstream, collectors, script)
        targets = start_routers(procs, workdir, placement, upstream, plugin_sets(collectors))
        print(
            f"{placement.describe()}; {args.rounds} rounds of {args.duration:g} s slices, "
            "a baseline slice around every target",
            flush=True,
        )

        def load(target: features.Target, seconds: float) -> bench.Result:
            before = bench.cpu_seconds(target.pid)
            data = bench.run_wrk(
                wrk, target.url + SMALL, seconds, args.connections, script, placement
            )
            used = bench.cpu_seconds(target.pid) - before
            result = bench.Result.from_wrk(target.label, "13 B", SMALL, data)
            result.extra["cpu_us_per_request"] = (
                used / result.requests * 1e6 if result.requests else 0.0
            )
            if target.exports_spans:
                time.sleep(SETTLE_S)  # the exporter sends (or fails) what this slice queued
            return result

        baseline = targets[0]
        if args.warmup > 0:
            for target in targets:
                load(target, args.warmup)
        slices: dict[str, list[bench.Result]] = {t.label: [] for t in targets}
        pairs: dict[str, list[tuple[float, float]]] = {t.label: [] for t in targets[1:]}
        for number in range(1, args.rounds + 1):
            before = load(baseline, args.duration)
            slices[BASELINE].append(before)
            shown = []
            for target in targets[1:]:
                current = load(target, args.duration)
                after = load(baseline, args.duration)
                slices[target.label].append(current)
                slices[BASELINE].append(after)
                pair = features.paired_ratios(before, current, after)
                pairs[target.label].append(pair)
                shown.append(f"{pair[0]:.2f}")
                before = after
            print(f"  round {number}/{args.rounds}: {' '.join(shown)}", flush=True)
        memory = {t.label: round(rss_mb(t.pid), 1) for t in targets}
        received = bench.http_get(collectors["working"].replace("/v1/traces", "/count"))[2]
        for name, proc in procs.procs.items():
            if proc.poll() is not None:
                raise bench.BenchError(f"{name} died during the run:\n{procs.log_tail(name)}")
    finally:
        procs.stop_all()
    return report(slices, pairs, memory, int(received), args)


def report(
    slices: dict[str, list[bench.Result]],
    pairs: dict[str, list[tuple[float, float]]],
    memory: dict[str, float],
    received: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    print()
    header = (
        f"{'sampling, collector':<24} {'req/s':>7} {'ratio':>6} {'cost':>6} {'CPU µs/req':>10} "
        f"{'CPU ratio':>9} {'RSS MB':>7}  req/s ratio per round"
    )
    print(header)
    print("-" * len(header))
    table: dict[str, dict[str, float]] = {}
    for label, rows in slices.items():
        own = pairs.get(label, [(1.0, 1.0)])
        ratio = statistics.median(speed for speed, _ in own)
        cpu_ratio = statistics.median(cpu for _, cpu in own)
        cpu = statistics.median(features.cpu_of(row) for row in rows)
        speed = statistics.median(row.requests_per_s for row in rows)
        table[label] = {
            "req_per_s": round(speed),
            "ratio": round(ratio, 3),
            "cpu_us_per_request": round(cpu, 1),
            "cpu_ratio": round(cpu_ratio, 3),
            "rss_mb": memory.get(label, 0.0),
        }
        shown = " ".join(f"{s:.2f}" for s, _ in own) if label != BASELINE else ""
        print(
            f"{label:<24} {speed:>7,.0f} {ratio:>6.2f} {1 - ratio:>6.0%} {cpu:>10.1f} "
            f"{cpu_ratio:>9.2f} {memory.get(label, 0.0):>7.1f}  {shown}"
        )
    errors = sum(row.errors for rows in slices.values() for row in rows)
    print(f"\nspans received by the working collector: {received:,}")
    if errors:
        print(f"WARNING: {errors} errors during the measurements")
    return {
        "settings": {
            "slice_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "rounds": args.rounds,
            "export_timeout": EXPORT_TIMEOUT,
        },
        "targets": table,
        "spans_received": received,
        "errors": errors,
    }


def soak(
    args: argparse.Namespace,
    wrk: str,
    workdir: Path,
    placement: bench.Placement,
    procs: bench.Processes,
    upstream: str,
    collectors: dict[str, str],
    script: Path,
) -> dict[str, Any]:
    label = "1.0, black hole"
    (target,) = start_routers(
        procs, workdir, placement, upstream, [(label, [tracing(1.0, collectors["black hole"])])]
    )
    print(f"soak: {label}, wrk -c20 for {args.soak:g} s; RSS every {SOAK_SAMPLE_S:g} s", flush=True)
    samples = [(0.0, rss_mb(target.pid))]
    print(f"  {0:>5.0f} s  RSS {samples[0][1]:6.1f} MB", flush=True)
    started = time.monotonic()
    requests = errors = 0
    while (elapsed := time.monotonic() - started) < args.soak:
        seconds = min(SOAK_SAMPLE_S, args.soak - elapsed)
        data = bench.run_wrk(wrk, target.url + SMALL, seconds, 20, script, placement)
        result = bench.Result.from_wrk(label, "13 B", SMALL, data)
        requests += result.requests
        errors += result.errors
        samples.append((time.monotonic() - started, rss_mb(target.pid)))
        print(
            f"  {samples[-1][0]:>5.0f} s  RSS {samples[-1][1]:6.1f} MB  "
            f"({result.requests_per_s:,.0f} req/s)",
            flush=True,
        )
    print(f"requests {requests:,}, errors {errors}")
    return {"soak_s": args.soak, "rss_mb": samples, "requests": requests, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_common_arguments(parser, duration=2.0, warmup=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="baseline/target rounds (median)")
    parser.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="only load a black-hole-collector router this long, RSS over time",
    )
    parser.add_argument("--collector", choices=("working", "black hole"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.collector is not None:
        serve_collector(args.collector, args.port)
        return 0
    return bench.execute(
        "benchmarks/tracing_cost.py",
        "commons-router-tracing-cost-",
        lambda nginx, wrk, workdir: run_all(args, nginx, wrk, workdir),
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
