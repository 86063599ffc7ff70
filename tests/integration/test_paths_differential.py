"""Differential: the router's decision agrees with the real framework behind it.

One ``commons-router serve`` routes a host per backend — aiohttp, Starlette on uvicorn
(httptools and h11), Flask on Werkzeug and Express 5 (``tests/express``) — with ``/``
public, ``/admin`` (Prefix) for the ``admins`` group and ``/internal/secret`` (Exact) for
signed-in users, and the ``path_match`` options the README lists for that backend. Each
route tells the backend which route it is (``X-Router-Route``); each backend answers with
the handler that ran (``X-Handler``, see ``tests/frameworks/apps.py``).

The property, for every target sent raw without credentials and with the bearer token of a
signed-in user outside ``admins``: a protected handler runs only for a request the router
judged by that handler's route. (Without credentials the router never forwards a request it
judged by a protected route, so any protected handler that runs is a bypass; with the token
it forwards those judged by ``/internal/secret``, which must not run the admin handler.)
Targets: a byte sweep of ``%00``-``%FF`` around ``/admin`` and
``/internal/secret``, and risky targets drawn by Hypothesis (derandomized, bounded).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.issuer import Issuer
from tests.support.processes import REPO, base_config, started, write_config

EXPRESS_DIR = REPO / "tests" / "express"
PARALLEL = 4
"""Connections per backend: requests overlap, so the router and the backend both work."""
PROTECTED = {"admin": "admin", "secret": "secret"}
"""Handler -> the route whose policy must have been applied for it to run."""

EXPRESS_OPTIONS = {"case_sensitive": False, "exact_trailing_slash": True}
BACKENDS: dict[str, dict[str, Any]] = {
    # backend -> the path_match options its protected routes need (README table)
    "aiohttp": {},
    "starlette-httptools": {},
    "starlette-h11": {},
    "flask": {},
    "express": EXPRESS_OPTIONS,
}


@dataclass
class Answer:
    status: int
    handler: str | None
    seen_route: str | None


@dataclass
class Site:
    router_port: int
    backend_ports: dict[str, int]
    user_token: str
    """A signed-in user, not in the ``admins`` group."""
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(PARALLEL))
    kept: dict[tuple[str, int], http.client.HTTPConnection] = field(default_factory=dict)
    """Connections to the router by (backend host, slot), kept across Hypothesis examples."""

    def send(
        self, port: int, host: str, targets: list[str], slot: int = -1, signed_in: bool = False
    ) -> list[Answer]:
        """GET each target, raw, on one keep-alive connection (reopened when closed)."""
        keep = slot >= 0
        connection = self.kept.get((host, slot)) if keep else None
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            if keep:
                self.kept[host, slot] = connection
        answers = []
        try:
            for target in targets:
                connection.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
                connection.putheader("Host", host)
                if signed_in:
                    connection.putheader("Authorization", f"Bearer {self.user_token}")
                connection.endheaders()
                response = connection.getresponse()
                response.read()
                answers.append(
                    Answer(
                        response.status,
                        response.getheader("X-Handler"),
                        response.getheader("X-Seen-Route"),
                    )
                )
                if response.will_close:
                    connection.close()
        finally:
            if not keep:
                connection.close()
        return answers

    def through_router(
        self, backend: str, targets: list[str], slot: int = -1, signed_in: bool = False
    ) -> list[Answer]:
        return self.send(self.router_port, f"{backend}.test", targets, slot, signed_in)

    def direct(self, backend: str, targets: list[str]) -> list[Answer]:
        return self.send(self.backend_ports[backend], "backend.test", targets)


def disagreements(
    site: Site, backend: str, targets: list[str], signed_in: bool = False
) -> list[str]:
    """The targets whose protected handler ran under another route than its own."""
    chunks = [targets[slot::PARALLEL] for slot in range(PARALLEL)]

    def send(slot: int) -> tuple[list[str], list[Answer]]:
        return chunks[slot], site.through_router(backend, chunks[slot], slot, signed_in)

    results = list(site.pool.map(send, range(PARALLEL)))
    found = []
    for chunk, answers in results:
        for target, answer in zip(chunk, answers, strict=True):
            route = PROTECTED.get(answer.handler or "")
            if route is not None and answer.seen_route != route:
                found.append(
                    f"{target!r}: handler {answer.handler!r} ran after route "
                    f"{answer.seen_route!r} (status {answer.status})"
                )
    return found


def routes_for(backend: str, port: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    def route(name: str, path: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": f"{backend}.{name}",
            "hosts": [f"{backend}.test"],
            "path": path,
            "upstreams": [{"url": f"http://127.0.0.1:{port}"}],
            "request_headers": {"set": {"X-Router-Route": name}},
            **extra,
        }

    return [
        route("public", "/", plugins={"auth": {"policy": "public"}}),
        route(
            "admin",
            "/admin",
            plugins={"auth": {"allow": {"groups": ["admins"]}}},
            path_match=options,
        ),
        route("secret", "/internal/secret", path_type="Exact", path_match=options),
    ]


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Inherited by accepted connections (Linux): a backend that writes the head and the
    # body separately would otherwise wait for a delayed ACK on each answer.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextlib.contextmanager
def backends(workdir: Path) -> Iterator[dict[str, int]]:
    """Start every backend on a socket bound here (no port race); stop them after."""
    node = shutil.which("node")
    if node is None or not (EXPRESS_DIR / "node_modules" / "express").is_dir():
        raise RuntimeError(
            "Express is not installed: run `npm ci` in tests/express (tests/run.sh does)"
        )
    processes: list[tuple[subprocess.Popen[bytes], BinaryIO]] = []
    ports: dict[str, int] = {}
    try:
        for name in [*BACKENDS, "express-defaults"]:
            kind = "express" if name.startswith("express") else name
            sock = _listening_socket()
            fd = sock.fileno()
            if kind == "express":
                command = [node, str(EXPRESS_DIR / "server.mjs"), str(fd)]
            else:
                command = [sys.executable, "-m", "tests.frameworks.apps", kind, str(fd)]
            log = (workdir / f"{name}.log").open("wb")
            process = subprocess.Popen(
                command, pass_fds=[fd], cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
            processes.append((process, log))
            ports[name] = sock.getsockname()[1]
            sock.close()
        yield ports
    finally:
        for process, _ in processes:
            process.terminate()
        for process, log in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            log.close()


def _wait_ready(url: str, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not ready in {timeout}s: {exc}") from None
        time.sleep(0.1)


@contextlib.contextmanager
def jwks_server(issuer: Issuer) -> Iterator[str]:
    """The issuer's keys over HTTP, from a thread (the tests here are synchronous)."""
    body = json.dumps(issuer.jwks()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("paths-differential")
    issuer = Issuer()
    with backends(workdir) as ports, jwks_server(issuer) as jwks_url:
        routes = []
        for backend, options in BACKENDS.items():
            routes += routes_for(backend, ports[backend], options)
        # The same Express site without the options it needs (see the last test).
        routes += routes_for("express-defaults", ports["express-defaults"], {})
        config = base_config(
            workdir,
            routes,
            access_log={"enabled": False},
            plugins=[
                {
                    "name": "auth",
                    "config": {
                        "bearer": {
                            "issuers": [
                                {
                                    "issuer": issuer.name,
                                    "jwks_url": jwks_url,
                                    "audience": ["api://router"],
                                }
                            ]
                        }
                    },
                }
            ],
        )
        config_path = workdir / "router.yaml"
        write_config(config_path, config)
        with started(["serve", "--config", str(config_path)], workdir) as router:
            admin = config["admin"]["listen"]
            try:
                _wait_ready(f"http://{admin}/readyz", "router")
                for name, port in ports.items():
                    _wait_ready(f"http://127.0.0.1:{port}/", name)
            except AssertionError:
                raise AssertionError(router.stderr()[-3000:]) from None
            port = int(config["listener"]["listen"].rpartition(":")[2])
            running = Site(port, ports, issuer.token(exp=int(time.time()) + 3600))
            yield running
            running.pool.shutdown()
            for connection in running.kept.values():
                connection.close()


def test_each_backend_routes_its_handlers_and_the_router_protects_them(site: Site) -> None:
    targets = ["/", "/admin", "/admin/users", "/internal/secret", "/internal/other"]
    for backend in BACKENDS:
        direct = [answer.handler for answer in site.direct(backend, targets)]
        assert direct == ["public", "admin", "admin", "secret", "public"], backend
        routed = site.through_router(backend, targets)
        assert [(a.status, a.handler) for a in routed] == [
            (200, "public"),
            (401, None),
            (401, None),
            (401, None),
            (200, "public"),
        ], backend
        signed_in = site.through_router(backend, targets, signed_in=True)
        assert [(a.status, a.handler, a.seen_route) for a in signed_in] == [
            (200, "public", "public"),
            (403, None, None),
            (403, None, None),
            (200, "secret", "secret"),
            (200, "public", "public"),
        ], backend


SWEEP_TEMPLATES = [
    "/admin{}",
    "/admin{}/x",
    "/{}admin",
    "/ad{}min",
    "/internal/secret{}",
    "/internal/secret/{}",
    "/internal{}secret",
]


def sweep_targets() -> list[str]:
    # Both cases of hex for ASCII (the controls, %3b, %2f...); upper case above.
    encodings = [f"%{code:02X}" for code in range(256)] + [f"%{code:02x}" for code in range(128)]
    unique = dict.fromkeys(template.format(e) for template in SWEEP_TEMPLATES for e in encodings)
    return list(unique)


@pytest.mark.parametrize("backend", BACKENDS)
def test_byte_sweep_finds_no_disagreement(site: Site, backend: str) -> None:
    assert disagreements(site, backend, sweep_targets()) == []


TOKENS = [
    "/",
    "//",
    ".",
    "..",
    "/.",
    "/..",
    ";",
    ";x",
    "/;/",
    "..;",
    "%2e",
    "%2E%2e",
    "%2f",
    "%5c",
    "\\",
    "%00",
    "%0a",
    "%0D",
    "%09",
    "%1f",
    "%7f",
    "%20",
    "+",
    "%3b",
    "%3B",
    "%23",
    "%3F",
    "%3f",
    "#",
    "?",
    "%25",
    "%252e",
    "%252F",
    "%2561",
    "%253B",
    "%c0%ae",
    "%e2%80%a8",
    "%ef%bc%8f",
    "~",
    "%7e",
    "*",
    "$",
    "%24",
    "&",
    "=",
]
CONTROLS = ["%0a", "%0A", "%0d", "%09", "%0b", "%1f", "%7F", "%00"]
BASES = ["/admin", "/internal/secret", "/internal", "/", "/admin/users"]


def _spell(char: str, how: int) -> str:
    if char not in string.ascii_letters:
        return char
    if how == 1:
        return char.swapcase()
    if how == 2:
        return f"%{ord(char):02X}"
    if how == 3:
        return f"%{ord(char.upper()):02x}"
    return char


@st.composite
def risky_targets(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(BASES))
    spellings = [0] * 12 + [1, 2, 3]  # mostly as is: the tokens are the point
    spelled = "".join(_spell(c, draw(st.sampled_from(spellings))) for c in base)
    for _ in range(draw(st.integers(0, 3))):
        # Half the time right after the path (or a segment of it): where bypasses live.
        boundaries = [i for i, c in enumerate(spelled) if c == "/"] + [len(spelled)]
        at = draw(
            st.one_of(
                st.just(len(spelled)), st.sampled_from(boundaries), st.integers(0, len(spelled))
            )
        )
        token = draw(st.one_of(st.sampled_from(CONTROLS), st.sampled_from(TOKENS)))
        spelled = spelled[:at] + token + spelled[at:]
    if not spelled.startswith("/"):
        spelled = "/" + spelled
    return spelled + draw(st.sampled_from(["", "", "/", "/x", "?x=/admin", "#/x", "%2f"]))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(
    derandomize=True,
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(targets=st.lists(risky_targets(), min_size=4, max_size=4))
# The spellings that reached protected handlers before, always tried first.
@example(targets=["/admin%0A", "/internal/secret%0a", "/ADMIN", "/%41DMIN"])
@example(targets=["/internal/secret/", "/Internal/Secret/", "/ad%09min", "/admin%3B"])
@example(targets=["/admin%23", "/admin%3Fx", "/%2561dmin", "/public/%252e%252e/admin"])
def test_risky_targets_find_no_disagreement(site: Site, backend: str, targets: list[str]) -> None:
    assert disagreements(site, backend, targets) == []
    assert disagreements(site, backend, targets, signed_in=True) == []


def test_express_needs_its_options(site: Site) -> None:
    """The README's table is true: without its options, Express runs protected handlers
    for spellings the router judges public."""
    targets = ["/ADMIN", "/Admin/users", "/internal/secret/"]
    assert [a.handler for a in site.through_router("express-defaults", targets)] == [
        "admin",
        "admin",
        "secret",
    ]
    assert [(a.status, a.handler) for a in site.through_router("express", targets)] == [
        (401, None)
    ] * 3
