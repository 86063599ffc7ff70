"""Load benchmark: commons-router against nginx and a plain aiohttp proxy, in one run.

    .venv/bin/python benchmarks/run.py [--duration 10] [--warmup 2] [--json FILE]

Starts nginx (the upstream, serving a 13-byte and a 16 KiB body) on a free 127.0.0.1 port,
and next to it, all at once: benchmarks/baseline_proxy.py (a plain aiohttp + uvloop proxy,
the floor for Python), commons-router with one worker (access log on, to a file, no
plugins) and commons-router with ``workers: 2``. Each is loaded with
``wrk -t1 -c64 -d{slice}s --latency`` against nginx direct (the ceiling), the baseline and
both routers. The ``--duration`` of each measurement is cut into ``--rounds`` slices and
the targets take turns slice by slice, so changes in the machine's other load hit them all
alike; the router/baseline ratio is the median of the per-round ratios (router and
baseline run back to back in each round). The CPU time each proxy used per request is
reported too: unlike req/s it barely moves when something else shares the machine.

CPU placement (when at least two CPUs are usable): wrk and nginx run on the first CPU, the
proxy under test on the second, so a one-worker proxy has a core to itself and is the
bottleneck. For "nginx direct", nginx is moved to the second CPU. The two-worker router is
left unpinned (it shares the first CPU with wrk and nginx). With one CPU nothing is pinned.

Prints req/s, p50, p99, errors and CPU time per request per target and body, and the
ratio of commons-router (one worker) to the baseline, by req/s and by CPU time per
request, with PASS (both >= 0.9 and no errors) or FAIL. Exit status: 0 when
everything ran (whatever the ratio), 1 when nginx or wrk is missing, 2 when a target did
not start or a measurement broke.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SMALL_BODY = b"Hello, world\n"  # 13 bytes
LARGE_BODY = bytes(range(256)) * 64  # 16 KiB
BODIES = (("13 B", "/small", len(SMALL_BODY)), ("16 KiB", "/16k", len(LARGE_BODY)))
TARGET_RATIO = 0.9

WRK_DONE_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nBENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


class BenchError(Exception):
    """A target did not start or a measurement could not be taken."""


@dataclass
class Result:
    target: str
    body: str
    path: str
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    bytes_per_response: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @classmethod
    def from_wrk(
        cls,
        target: str,
        body: str,
        path: str,
        data: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> Result:
        """One row from the numbers wrk's ``done()`` hook reported."""
        requests = int(data["requests"])
        return cls(
            target=target,
            body=body,
            path=path,
            requests_per_s=requests / (data["duration_us"] / 1e6),
            p50_ms=data["p50_us"] / 1000,
            p90_ms=data["p90_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            max_ms=data["max_us"] / 1000,
            requests=requests,
            non_2xx=int(data["status"]),
            socket_errors=sum(int(data[k]) for k in ("connect", "read", "write", "timeout")),
            bytes_per_response=data["bytes"] / requests if requests else 0.0,
            extra=extra or {},
        )


def add_common_arguments(
    parser: argparse.ArgumentParser, *, duration: float, warmup: float
) -> None:
    """The options every benchmark takes."""
    parser.add_argument("--duration", type=float, default=duration, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=warmup, help="seconds of warm-up per body")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")


# -- environment -----------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (
            str(p)
            for d in ("/usr/sbin", "/usr/local/sbin", "/sbin")
            if (p := Path(d, name)).is_file()
        ),
        None,
    )


def check_tools() -> tuple[str, str] | None:
    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    if nginx and wrk:
        return nginx, wrk
    missing = " and ".join(name for name, path in (("nginx", nginx), ("wrk", wrk)) if not path)
    print(
        f"benchmarks/run.py: {missing} not found. This benchmark installs nothing itself.\n"
        "Install them, e.g. on Debian/Ubuntu:\n"
        "    sudo apt-get update && sudo apt-get install -y nginx-light wrk\n"
        "(or the 'nginx' package); on macOS: brew install nginx wrk. Then run again.",
        file=sys.stderr,
    )
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "router"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "?"
    commit = out.stdout.strip() or "?"
    return commit + ("+local-changes" if dirty.stdout.strip() else "")


class Placement:
    """Which CPUs the load generator and the server under test use."""

    def __init__(self, enabled: bool) -> None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.taskset = shutil.which("taskset")
        self.enabled = enabled and len(cpus) >= 2 and self.taskset is not None
        self.client_cpu = cpus[0] if self.enabled else None
        self.server_cpu = cpus[1] if self.enabled else None

    def describe(self) -> str:
        if not self.enabled:
            return "no CPU pinning (fewer than 2 CPUs, no taskset, or --no-pin)"
        return (
            f"taskset: wrk + nginx on CPU {self.client_cpu}, one-worker proxy on CPU "
            f"{self.server_cpu} (nginx moved to CPU {self.server_cpu} for 'nginx direct'); "
            "two-worker router unpinned"
        )

    def prefix(self, cpu: int | None) -> list[str]:
        if not self.enabled or cpu is None or self.taskset is None:
            return []
        return [self.taskset, "-c", str(cpu)]

    def move(self, pid: int, cpu: int | None) -> None:
        """Pin an already running process and all its threads/children to ``cpu``."""
        if not self.enabled or cpu is None:
            return
        import psutil

        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        for proc in procs:
            for thread in proc.threads():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(thread.id, {cpu})


# -- processes -------------------------------------------------------------------------


class Processes:
    """Every process this benchmark starts; all are stopped on exit, by process group."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
        # Anything left in the group (e.g. router workers) is killed.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, dict(response.headers.items()), response.read()


def wait_ready(procs: Processes, name: str, url: str, deadline_s: float = 20.0) -> None:
    proc = procs.procs[name]
    deadline = time.monotonic() + deadline_s
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(
                f"{name} exited with status {proc.returncode}:\n{procs.log_tail(name)}"
            )
        try:
            status, _, _ = http_get(url, timeout=1.0)
            if status == 200:
                return
            last_error = f"status {status}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{name} not ready at {url} ({last_error}):\n{procs.log_tail(name)}")


def verify_bodies(base_url: str, name: str, expect_request_id: bool) -> None:
    """One plain request per body: status 200, the exact bytes, the router's own header."""
    expected = {"/small": SMALL_BODY, "/16k": LARGE_BODY}
    for path, body in expected.items():
        try:
            status, headers, data = http_get(base_url + path)
        except OSError as exc:
            raise BenchError(f"{name}: GET {path} failed: {exc}") from None
        if status != 200 or data != body:
            raise BenchError(f"{name}: GET {path} gave {status} with {len(data)} bytes")
        if expect_request_id and "X-Request-Id" not in headers:
            raise BenchError(f"{name}: GET {path} has no X-Request-Id; is it the router?")


# -- nginx -----------------------------------------------------------------------------


def nginx_main(prefix: Path, nginx: str, http: str) -> str:
    """A whole nginx.conf: one worker in the foreground, everything under ``prefix``, and
    ``http`` inside the ``http`` block (temp paths only for the modules this nginx has)."""
    built = subprocess.run(
        [nginx, "-V"], capture_output=True, text=True, timeout=10, check=False
    ).stderr
    temp_paths = [f"client_body_temp_path {prefix}/tmp/body;"]
    for module in ("proxy", "fastcgi", "uwsgi", "scgi"):
        if f"--without-http_{module}_module" not in built:
            temp_paths.append(f"{module}_temp_path {prefix}/tmp/{module};")
    temps = "\n    ".join(temp_paths)
    return f"""
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {temps}
{http}}}
"""


def nginx_config(prefix: Path, port: int, nginx: str) -> str:
    return nginx_main(
        prefix,
        nginx,
        f"""    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    keepalive_timeout 75s;
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        root {prefix}/www;
        location = /small {{ }}
        location = /16k {{ }}
        location = / {{ return 200 "ok\\n"; }}
    }}
""",
    )


def start_nginx(procs: Processes, nginx: str, workdir: Path, placement: Placement) -> str:
    prefix = workdir / "nginx"
    (prefix / "www").mkdir(parents=True)
    (prefix / "tmp").mkdir()
    (prefix / "www" / "small").write_bytes(SMALL_BODY)
    (prefix / "www" / "16k").write_bytes(LARGE_BODY)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, port, nginx))
    cmd = [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30, check=False)
    if check.returncode != 0:
        raise BenchError(f"nginx rejected its configuration:\n{check.stderr}")
    procs.start("nginx", placement.prefix(placement.client_cpu) + cmd)
    url = f"http://127.0.0.1:{port}"
    wait_ready(procs, "nginx", url + "/")
    verify_bodies(url, "nginx", expect_request_id=False)
    return url


# -- wrk -------------------------------------------------------------------------------


def run_wrk(
    wrk: str,
    url: str,
    seconds: float,
    connections: int,
    script: Path,
    placement: Placement,
) -> dict[str, Any]:
    cmd = [
        *placement.prefix(placement.client_cpu),
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish: {' '.join(cmd)}") from None
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            data["text"] = out.stdout
            return data
    raise BenchError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout}")


def measure(
    wrk: str,
    target: str,
    base_url: str,
    args: argparse.Namespace,
    script: Path,
    placement: Placement,
) -> list[Result]:
    results = []
    for body, path, size in BODIES:
        url = base_url + path
        if args.warmup > 0:
            run_wrk(wrk, url, args.warmup, args.connections, script, placement)
        data = run_wrk(wrk, url, args.duration, args.connections, script, placement)
        result = Result.from_wrk(target, body, path, data)
        requests = result.requests
        if requests and result.bytes_per_response < size:
            raise BenchError(
                f"{target} {path}: {result.bytes_per_response:.0f} bytes per response, "
                f"less than the {size}-byte body"
            )
        print(
            f"  {target:<28} {body:>7}  {result.requests_per_s:>9,.0f} req/s  "
            f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  errors {result.errors}",
            flush=True,
        )
        results.append(result)
    return results


# -- targets ---------------------------------------------------------------------------


def baseline_command(upstream: str) -> tuple[list[str], str]:
    """The plain aiohttp baseline proxy on a free port: its command (not pinned), its URL."""
    port = free_port()
    cmd = [
        sys.executable,
        str(HERE / "baseline_proxy.py"),
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        upstream,
    ]
    return cmd, f"http://127.0.0.1:{port}"


def router_command() -> list[str]:
    script = Path(sys.executable).parent / "commons-router"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "router"]


def write_router_config(workdir: Path, name: str, upstream: str, workers: int) -> Path:
    port, admin = free_port(), free_port()
    path = workdir / f"{name}.yaml"
    access_log = workdir / f"{name}.access.log"
    path.write_text(
        json.dumps(
            {
                "listener": {"listen": f"127.0.0.1:{port}"},
                "admin": {"listen": f"127.0.0.1:{admin}"},
                "workers": workers,
                "drain": {"delay": 0, "grace": 5},
                "access_log": {"enabled": True, "path": str(access_log)},
                "routes": [{"name": "bench", "upstreams": [{"url": upstream}]}],
            },
            indent=2,
        )
    )
    return path


def router_with_plugins(
    workdir: Path, name: str, upstream: str, plugins: list[dict[str, Any]], placement: Placement
) -> tuple[list[str], str, str]:
    """A one-worker router with ``plugins``, pinned to the server CPU: its command, its
    URL and its readiness URL."""
    config = write_router_config(workdir, name, upstream, 1)
    settings = json.loads(config.read_text())
    settings["plugins"] = plugins
    config.write_text(json.dumps(settings, indent=2))
    cmd = [
        *placement.prefix(placement.server_cpu),
        *router_command(),
        "serve",
        "--config",
        str(config),
    ]
    listen, admin = settings["listener"]["listen"], settings["admin"]["listen"]
    return cmd, f"http://{listen}", f"http://{admin}/readyz"


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    count = 0
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            count += chunk.count(b"\n")
    return count


@contextlib.contextmanager
def target_process(
    procs: Processes, name: str, cmd: list[str], ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    proc = procs.start(name, cmd)
    try:
        wait_ready(procs, name, ready_url)
        yield proc
        if proc.poll() is not None:
            raise BenchError(f"{name} died during the run:\n{procs.log_tail(name)}")
    finally:
        procs.stop(name)


@dataclass
class Target:
    """One thing under load: its URL and the processes whose CPU time it costs."""

    label: str
    url: str
    pid: int
    cpu: int | None
    """CPU it is pinned to while measured (None: not pinned)."""
    is_nginx: bool = False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and all its descendants (router workers too)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def slice_result(
    target: Target, body: str, path: str, size: int, data: dict[str, Any], cpu: float
) -> Result:
    result = Result.from_wrk(
        target.label, body, path, data, {"duration_s": data["duration_us"] / 1e6, "cpu_s": cpu}
    )
    if result.requests and result.bytes_per_response < size:
        raise BenchError(
            f"{target.label} {path}: {result.bytes_per_response:.0f} bytes per response, "
            f"less than the {size}-byte body"
        )
    return result


def combine(slices: list[Result]) -> Result:
    """One row from a target's slices: total requests over total time; the median of the
    slices' percentiles; errors summed; CPU time per request (proxies only)."""
    first = slices[0]
    requests = sum(s.requests for s in slices)
    seconds = sum(s.extra["duration_s"] for s in slices)
    cpu = sum(s.extra["cpu_s"] for s in slices)
    return Result(
        target=first.target,
        body=first.body,
        path=first.path,
        requests_per_s=requests / seconds if seconds else 0.0,
        p50_ms=statistics.median(s.p50_ms for s in slices),
        p90_ms=statistics.median(s.p90_ms for s in slices),
        p99_ms=statistics.median(s.p99_ms for s in slices),
        max_ms=max(s.max_ms for s in slices),
        requests=requests,
        non_2xx=sum(s.non_2xx for s in slices),
        socket_errors=sum(s.socket_errors for s in slices),
        bytes_per_response=sum(s.bytes_per_response * s.requests for s in slices) / requests
        if requests
        else 0.0,
        extra={
            "rounds": len(slices),
            "requests_per_s_by_round": [round(s.requests_per_s, 1) for s in slices],
            "cpu_us_per_request": round(cpu / requests * 1e6, 1) if requests and cpu else None,
        },
    )


BASELINE = "aiohttp baseline"
ROUTER = "commons-router 1 worker"


def start_targets(
    procs: Processes, nginx: str, workdir: Path, placement: Placement
) -> list[Target]:
    """nginx, the baseline and both routers, all running at once (idle until measured)."""
    upstream = start_nginx(procs, nginx, workdir, placement)
    targets = [Target("nginx (direct)", upstream, procs.procs["nginx"].pid, None, is_nginx=True)]
    cmd, url = baseline_command(upstream)
    procs.start("baseline", [*placement.prefix(placement.server_cpu), *cmd])
    wait_ready(procs, "baseline", url + "/")
    verify_bodies(url, BASELINE, expect_request_id=False)
    targets.append(Target(BASELINE, url, procs.procs["baseline"].pid, placement.server_cpu))
    for workers, label in ((1, ROUTER), (2, "commons-router 2 workers")):
        name = f"router-{workers}w"
        config = write_router_config(workdir, name, upstream, workers)
        settings = json.loads(config.read_text())
        url = "http://" + settings["listener"]["listen"]
        cpu = placement.server_cpu if workers == 1 else None
        procs.start(
            name, [*placement.prefix(cpu), *router_command(), "serve", "--config", str(config)]
        )
        wait_ready(procs, name, "http://" + settings["admin"]["listen"] + "/readyz")
        verify_bodies(url, label, expect_request_id=True)
        targets.append(Target(label, url, procs.procs[name].pid, cpu))
    return targets


def run_all(args: argparse.Namespace, nginx: str, wrk: str, workdir: Path) -> dict[str, Any]:
    """Every target runs at once; each body is measured in rounds, every round loading
    each target in turn for ``duration / rounds`` seconds. Slow drifts in the machine's
    other load then hit every target alike, and each round gives one paired
    router/baseline ratio (the two run back to back)."""
    placement = Placement(not args.no_pin)
    script = workdir / "report.lua"
    script.write_text(WRK_DONE_SCRIPT)
    procs = Processes(workdir)
    rounds = max(1, args.rounds)
    slice_s = max(1, round(args.duration / rounds))
    rows: list[Result] = []
    paired: dict[str, list[float]] = {}
    try:
        targets = start_targets(procs, nginx, workdir, placement)
        print(
            f"upstream nginx at {targets[0].url}; {placement.describe()}; "
            f"{rounds} rounds of {slice_s} s per target and body",
            flush=True,
        )

        def load(target: Target, url: str, seconds: float) -> tuple[dict[str, Any], float]:
            if target.is_nginx:
                placement.move(target.pid, placement.server_cpu)
            before = 0.0 if target.is_nginx else cpu_seconds(target.pid)
            try:
                data = run_wrk(wrk, url, seconds, args.connections, script, placement)
            finally:
                if target.is_nginx:
                    placement.move(target.pid, placement.client_cpu)
            used = 0.0 if target.is_nginx else cpu_seconds(target.pid) - before
            return data, used

        for body, path, size in BODIES:
            if args.warmup > 0:
                for target in targets:
                    load(target, target.url + path, args.warmup)
            slices: dict[str, list[Result]] = {t.label: [] for t in targets}
            for number in range(1, rounds + 1):
                for target in targets:
                    data, used = load(target, target.url + path, slice_s)
                    slices[target.label].append(slice_result(target, body, path, size, data, used))
                done = {label: s[-1] for label, s in slices.items()}
                print(
                    f"  {body:>6} round {number}/{rounds}: "
                    + ", ".join(f"{label} {r.requests_per_s:,.0f}" for label, r in done.items()),
                    flush=True,
                )
            paired[body] = [
                r.requests_per_s / b.requests_per_s
                for r, b in zip(slices[ROUTER], slices[BASELINE], strict=True)
                if b.requests_per_s > 0
            ]
            rows += [combine(s) for s in slices.values()]
        for target in targets:
            if target.label.startswith("commons-router"):
                name = "router-1w" if target.label == ROUTER else "router-2w"
                lines = count_lines(workdir / f"{name}.access.log")
                for row in rows:
                    if row.target == target.label:
                        row.extra["access_log_lines_total"] = lines
        for name, proc in procs.procs.items():
            if proc.poll() is not None:
                raise BenchError(f"{name} died during the run:\n{procs.log_tail(name)}")
    finally:
        procs.stop_all()
    return report(args, rows, paired, placement, nginx, wrk)


# -- report ----------------------------------------------------------------------------


def report(
    args: argparse.Namespace,
    results: list[Result],
    paired: dict[str, list[float]],
    placement: Placement,
    nginx: str,
    wrk: str,
) -> dict[str, Any]:
    print()
    header = (
        f"{'body':<7} {'target':<26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'CPU us/req':>11}"
    )
    print(header)
    print("-" * len(header))
    verdicts: dict[str, dict[str, Any]] = {}
    for body, _, _ in BODIES:
        rows = [r for r in results if r.body == body]
        for r in rows:
            cpu = r.extra.get("cpu_us_per_request")
            print(
                f"{r.body:<7} {r.target:<26} {r.requests_per_s:>9,.0f} {r.p50_ms:>8.2f} "
                f"{r.p99_ms:>8.2f} {r.errors:>7} {cpu if cpu is not None else '-':>11}"
            )
        base = next((r for r in rows if r.target == BASELINE), None)
        router = next((r for r in rows if r.target == ROUTER), None)
        ratios = paired.get(body, [])
        if base and router and ratios:
            ratio = statistics.median(ratios)
            base_cpu = base.extra.get("cpu_us_per_request")
            router_cpu = router.extra.get("cpu_us_per_request")
            cpu_ratio = base_cpu / router_cpu if base_cpu and router_cpu else None
            # On a quiet machine both ratios agree; under background load req/s scatters
            # and could pass by luck, so both must reach the target.
            passed = (
                ratio >= TARGET_RATIO
                and (cpu_ratio is None or cpu_ratio >= TARGET_RATIO)
                and router.errors == 0
                and base.errors == 0
            )
            verdicts[body] = {
                "ratio": round(ratio, 3),
                "ratio_by_round": [round(x, 3) for x in ratios],
                "cpu_ratio": round(cpu_ratio, 3) if cpu_ratio else None,
                "pass": passed,
            }
            cpu_text = f"{cpu_ratio:.2f}" if cpu_ratio is not None else "n/a"
            print(
                f"{body:<7} ratio commons-router (1 worker) / baseline: req/s {ratio:.2f} "
                f"(median of {len(ratios)} paired rounds: "
                f"{' '.join(f'{x:.2f}' for x in ratios)}), CPU per request {cpu_text}; "
                f"target both >= {TARGET_RATIO} with 0 errors: {'PASS' if passed else 'FAIL'}"
            )
            if len(ratios) > 1 and max(ratios) > 1.25 * min(ratios):
                verdicts[body]["noisy"] = True
                print(
                    f"{body:<7} warning: the per-round ratios disagree by more than 25%: "
                    "something else is loading this machine; trust the CPU-per-request "
                    "ratio more, or run again when it is quiet"
                )
        print()
    return {
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "wrk_threads": 1,
            "placement": placement.describe(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_average_at_end": os.getloadavg(),
        },
        "versions": {
            "commit": git_commit(),
            "python": platform.python_version(),
            "nginx": tool_version([nginx, "-v"]),
            "wrk": tool_version([wrk, "-v"]),
            "kernel": platform.release(),
        },
        "results": [{**asdict(r), "errors": r.errors} for r in results],
        "ratio_router_to_baseline": verdicts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, duration=10.0, warmup=2.0)
    parser.add_argument(
        "--rounds", type=int, default=5, help="slices per measurement, targets interleaved"
    )
    args = parser.parse_args(argv)

    return execute(
        "benchmarks/run.py",
        "commons-router-bench-",
        lambda nginx, wrk, workdir: run_all(args, nginx, wrk, workdir),
        args.json,
    )


def execute(
    script: str,
    prefix: str,
    run: Callable[[str, str, Path], dict[str, Any]],
    json_path: Path | None,
) -> int:
    """The common frame of every benchmark: tools, a scratch directory, errors, JSON.

    Returns the exit status: 0 when it ran, 1 when nginx or wrk is missing, 2 when a
    target failed to start or a measurement broke.
    """
    tools = check_tools()
    if tools is None:
        return 1
    nginx, wrk = tools
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    # nginx workers started by root run as an unprivileged user: let them reach www/.
    workdir.chmod(0o711)
    try:
        document = run(nginx, wrk, workdir)
    except BenchError as exc:
        print(f"{script}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{script}: interrupted", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
