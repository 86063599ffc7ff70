"""Cost of authentication, as ratios to the same run's plain aiohttp proxy.

    .venv/bin/python benchmarks/auth.py [--duration 5] [--warmup 1] [--json FILE]

Reuses benchmarks/run.py (nginx upstream, wrk, CPU placement, process handling) and
measures, one after the other, with ``wrk -t1 -c64``:

* benchmarks/baseline_proxy.py (plain aiohttp + uvloop proxy: the baseline),
* commons-router, one worker, no plugins,
* + a session route: a valid session cookie, sessions in a real redis-server,
* + a bearer route: a valid RS256 JWT checked against the issuer's JWKS.

Both authenticated routes add the identity headers for the backend. Target: each >= 0.8x
the baseline. Exit status as for run.py: 0 ran, 1 tools missing, 2 a target failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402

TARGET_RATIO = 0.8
BASELINE = "aiohttp baseline"
SESSION = "router + session (Redis)"
BEARER = "router + bearer JWT"
ISSUER = "https://issuer.bench"
SESSION_KEY = base64.urlsafe_b64encode(b"commons-router-benchmark-key-32b").decode()


def start_redis(procs: bench.Processes, placement: bench.Placement) -> str:
    redis = shutil.which("redis-server")
    if redis is None:
        raise bench.BenchError("redis-server is not installed")
    port = bench.free_port()
    cmd = [
        *placement.prefix(placement.client_cpu),
        redis,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    procs.start("redis", cmd)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False
        )
        if done.stdout.strip() == "PONG":
            return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    raise bench.BenchError("redis-server did not start")


def start_jwks(procs: bench.Processes, workdir: Path, key: rsa.RSAPrivateKey) -> str:
    directory = workdir / "jwks"
    directory.mkdir()
    jwk = {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "bench", "use": "sig"}
    (directory / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    port = bench.free_port()
    procs.start(
        "jwks",
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(directory),
        ],
    )
    url = f"http://127.0.0.1:{port}/jwks.json"
    bench.wait_ready(procs, "jwks", url)
    return url


def make_session(redis_url: str) -> str:
    """A signed-in user's cookie value, created through the same store the router reads."""
    sys.path.insert(0, str(bench.REPO / "plugins"))
    from router_plugins.sessions.crypto import Sealer, parse_key
    from router_plugins.sessions.redis_store import RedisBackend
    from router_plugins.sessions.store import SessionStore

    async def create() -> str:
        backend = RedisBackend.from_url(redis_url, timeout=2)
        store = SessionStore(
            backend, Sealer([parse_key(SESSION_KEY)]), idle_timeout=3600, lifetime=7200
        )
        try:
            session = await store.create(
                {"sub": "bench", "email": "bench@example.org", "groups": ["staff"]},
                issuer=ISSUER,
            )
            return session.id
        finally:
            await store.close()

    return asyncio.run(create())


def wrk_script(workdir: Path, name: str, header: str, value: str) -> Path:
    path = workdir / f"{name}.lua"
    path.write_text(f'wrk.headers["{header}"] = "{value}"\n' + bench.WRK_DONE_SCRIPT)
    return path


def cpu_seconds(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def measure_with_cpu(
    wrk: str,
    target: str,
    url: str,
    args: argparse.Namespace,
    script: Path,
    placement: bench.Placement,
    pid: int,
    cpu: dict[str, float],
) -> list[bench.Result]:
    """Throughput as usual, plus the target's CPU time per request: a figure that holds
    even when other work shares the machine (throughput ratios do not)."""
    before = cpu_seconds(pid)
    results = bench.measure(wrk, target, url, args, script, placement)
    used = cpu_seconds(pid) - before
    requests = sum(r.requests for r in results)
    # Warm-up requests are not counted in ``requests`` but cost CPU: the figure is an upper
    # bound, inflated by the same warm-up share for every target.
    cpu[target] = used / requests * 1e6 if requests else 0.0
    return results


def run_all(args: argparse.Namespace, nginx: str, wrk: str, workdir: Path) -> dict[str, Any]:
    placement = bench.Placement(not args.no_pin)
    script = workdir / "report.lua"
    script.write_text(bench.WRK_DONE_SCRIPT)
    procs = bench.Processes(workdir)
    results: list[bench.Result] = []
    cpu: dict[str, float] = {}
    try:
        upstream = bench.start_nginx(procs, nginx, workdir, placement)
        print(f"upstream nginx at {upstream}; {placement.describe()}", flush=True)
        redis_url = start_redis(procs, placement)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwks_url = start_jwks(procs, workdir, key)

        cmd, url = bench.baseline_command(upstream)
        cmd = [*placement.prefix(placement.server_cpu), *cmd]
        with bench.target_process(procs, "baseline", cmd, url + "/") as proc:
            results += measure_with_cpu(wrk, BASELINE, url, args, script, placement, proc.pid, cpu)

        cookie = make_session(redis_url)
        token = jwt.encode(
            {
                "iss": ISSUER,
                "aud": "bench",
                "sub": "bench",
                "email": "bench@example.org",
                "exp": int(time.time()) + 3600,
            },
            key,
            algorithm="RS256",
            headers={"kid": "bench"},
        )
        auth_plugins = [
            {
                "name": "sessions",
                "config": {
                    "store": "redis",
                    "redis": {"url": redis_url},
                    "encryption_keys": [SESSION_KEY],
                },
            },
            {
                "name": "auth",
                "config": {
                    "bearer": {
                        "issuers": [{"issuer": ISSUER, "jwks_url": jwks_url, "audience": ["bench"]}]
                    }
                },
            },
        ]
        targets = [
            ("router (no plugins)", [], script),
            (
                SESSION,
                auth_plugins,
                wrk_script(workdir, "session", "Cookie", f"commons-router-session={cookie}"),
            ),
            (
                BEARER,
                auth_plugins,
                wrk_script(workdir, "bearer", "Authorization", f"Bearer {token}"),
            ),
        ]
        for index, (label, plugins, target_script) in enumerate(targets):
            name = f"router-{index}"
            cmd, url, ready = bench.router_with_plugins(
                workdir, name, upstream, plugins, placement
            )
            with bench.target_process(procs, name, cmd, ready) as proc:
                results += measure_with_cpu(
                    wrk, label, url, args, target_script, placement, proc.pid, cpu
                )
    finally:
        procs.stop_all()
    return report(results, args, cpu)


def report(
    results: list[bench.Result], args: argparse.Namespace, cpu: dict[str, float]
) -> dict[str, Any]:
    print()
    header = f"{'body':<7} {'target':<30} {'req/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7}"
    print(header)
    print("-" * len(header))
    ratios: dict[str, dict[str, float]] = {}
    for body, _, _ in bench.BODIES:
        rows = [r for r in results if r.body == body]
        base = next((r for r in rows if r.target == BASELINE), None)
        for r in rows:
            ratio = r.requests_per_s / base.requests_per_s if base and base.requests_per_s else 0
            ratios.setdefault(body, {})[r.target] = round(ratio, 3)
            print(
                f"{r.body:<7} {r.target:<30} {r.requests_per_s:>9,.0f} {ratio:>6.2f} "
                f"{r.p50_ms:>7.2f} {r.p99_ms:>7.2f}" + (f"  errors {r.errors}" if r.errors else "")
            )
        for target in (SESSION, BEARER):
            value = ratios.get(body, {}).get(target, 0.0)
            errors = next((r.errors for r in rows if r.target == target), 0)
            verdict = "PASS" if value >= TARGET_RATIO and not errors else "FAIL"
            print(f"{body:<7} {target} / baseline = {value:.2f} (target >= 0.8): {verdict}")
        print()
    base_cpu = cpu.get(BASELINE, 0.0)
    print("CPU time of the proxy per request (both bodies, incl. warm-up share):")
    cpu_ratios = {}
    for target, micros in cpu.items():
        cpu_ratios[target] = round(base_cpu / micros, 3) if micros else 0.0
        print(f"  {target:<30} {micros:7.1f} us  baseline/this = {cpu_ratios[target]:.2f}")
    return {
        "cpu_us_per_request": {k: round(v, 1) for k, v in cpu.items()},
        "cpu_ratio_to_baseline": cpu_ratios,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
        },
        "results": [{**r.__dict__, "errors": r.errors} for r in results],
        "ratio_to_baseline": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_common_arguments(parser, duration=5.0, warmup=1.0)
    args = parser.parse_args(argv)
    return bench.execute(
        "benchmarks/auth.py",
        "commons-router-auth-bench-",
        lambda nginx, wrk, workdir: run_all(args, nginx, wrk, workdir),
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
