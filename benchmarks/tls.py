"""TLS benchmark: handshakes/s and request throughput with 1, 100 and 10,000 certificates
loaded, against nginx terminating TLS for the same backend, in one run.

    .venv/bin/python benchmarks/tls.py                # ~1.5 minutes
    .venv/bin/python benchmarks/tls.py --duration 3 --rounds 2 --json out.json

Starts nginx as the plain-HTTP backend (serving a 13-byte body), then, all at once:
nginx terminating TLS (one worker, proxying to the backend over kept-alive connections)
and three one-worker routers with one TLS listener each, loaded with 1, 100 and 10,000
certificates (one for ``localhost``, the rest for other names; files, as in production).
Access logs are off on both sides; the routers check their certificate files every 60 s
(the polling cost is not what is measured here). Every round loads each target in turn with

- **handshakes**: ``wrk -c16`` with ``Connection: close`` (one full TLS handshake, SNI
  ``localhost``, per request: wrk does not resume sessions);
- **requests**: ``wrk -c64`` on kept-alive TLS connections.

and prints the medians and the ratios of the 100- and 10,000-certificate routers to the
one-certificate router (the SNI lookup is a dictionary hit, so they should be ~1) and of
each router to nginx. Pinning as in run.py: wrk and the backend on one CPU, the TLS
terminator under test on the other. Exit status as run.py: 0 ran, 1 tools missing,
2 a target failed.

In process (no network, no event loop), after the runs: handshakes/s through the router's
store and SNI callback with 1, 100 and 10,000 certificates, and full handshakes with and
without session tickets issued, against handshakes resumed from a ticket (TLS 1.3, 1.2).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import ssl
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402

COUNTS = (1, 100, 10_000)
CLOSE_SCRIPT = 'wrk.headers["Connection"] = "close"\n' + bench.WRK_DONE_SCRIPT


@dataclass
class Target:
    label: str
    url: str
    pid: int
    started: float
    ready_s: float = 0.0


# -- certificates ----------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_certificates(directory: Path, count: int) -> tuple[Path, list[tuple[Path, Path]]]:
    """A CA, a ``localhost`` certificate and ``count - 1`` others (sharing one key, which
    costs the router nothing less: each is still its own certificate and context)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("bench CA"))
        .issuer_name(_name("bench CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = directory / "shared.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pairs = []
    for index in range(count):
        host = "localhost" if index == 0 else f"site{index}.bench.test"
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name(host))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        path = directory / f"{index}.crt"
        path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        pairs.append((path, key_path))
    return ca_path, pairs


# -- targets ---------------------------------------------------------------------------


def nginx_tls_config(
    prefix: Path, nginx: str, port: int, upstream: str, cert: Path, key: Path
) -> str:
    return bench.nginx_main(
        prefix,
        nginx,
        f"""    keepalive_requests 10000000;
    upstream backend {{ server {upstream.removeprefix("http://")}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} ssl backlog=1024;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
""",
    )


def start_nginx_tls(
    procs: bench.Processes,
    nginx: str,
    workdir: Path,
    upstream: str,
    pair: tuple[Path, Path],
    placement: bench.Placement,
) -> Target:
    prefix = workdir / "nginx-tls"
    (prefix / "tmp").mkdir(parents=True)
    port = bench.free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_tls_config(prefix, nginx, port, upstream, *pair))
    cmd = [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    proc = procs.start("nginx-tls", placement.prefix(placement.server_cpu) + cmd)
    return Target("nginx TLS", f"https://localhost:{port}", proc.pid, time.monotonic())


def start_router(
    procs: bench.Processes,
    workdir: Path,
    upstream: str,
    pairs: list[tuple[Path, Path]],
    placement: bench.Placement,
) -> tuple[Target, str]:
    count = len(pairs)
    port, admin = bench.free_port(), bench.free_port()
    config = workdir / f"router-{count}.json"
    config.write_text(
        json.dumps(
            {
                "listeners": [{"name": "https", "listen": f"127.0.0.1:{port}", "tls": {}}],
                "tls": {
                    "certificates": [{"cert": str(c), "key": str(k)} for c, k in pairs],
                    # Polling 10,000 file pairs every 2 s (the default) costs ~3 % of a
                    # core by itself; that is measured apart (README), not mixed in here.
                    "watch_interval": "60s",
                },
                "admin": {"listen": f"127.0.0.1:{admin}"},
                "drain": {"delay": 0, "grace": 5},
                "access_log": {"enabled": False},
                "routes": [{"name": "bench", "upstreams": [{"url": upstream}]}],
            }
        )
    )
    cmd = [
        *placement.prefix(placement.server_cpu),
        *bench.router_command(),
        "serve",
        "--config",
        str(config),
    ]
    proc = procs.start(f"router-{count}", cmd)
    label = f"router {count:,} cert" + ("s" if count > 1 else "")
    target = Target(label, f"https://localhost:{port}", proc.pid, time.monotonic())
    return target, f"http://127.0.0.1:{admin}"


def wait_tls(procs: bench.Processes, name: str, target: Target, ca: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 120
    last = ""
    while time.monotonic() < deadline:
        proc = procs.procs[name]
        if proc.poll() is not None:
            raise bench.BenchError(f"{name} exited:\n{procs.log_tail(name)}")
        try:
            with urllib.request.urlopen(target.url + "/small", context=context, timeout=2) as r:
                if r.status == 200 and r.read() == bench.SMALL_BODY:
                    target.ready_s = time.monotonic() - target.started
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise bench.BenchError(f"{name} not serving TLS ({last}):\n{procs.log_tail(name)}")


def rss_mib(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        total += child.memory_info().rss
    return total / 2**20


# -- in process ------------------------------------------------------------------------


def handshake_once(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
) -> ssl.SSLObject:
    """One TLS handshake between two in-memory endpoints (SNI ``localhost``), resuming
    ``session`` if given; the client, with the tickets the server sent taken in."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(s_in, s_out, server_hostname="localhost", session=session)
    done = {"client": False, "server": False}
    while not all(done.values()):
        for name, endpoint in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    endpoint.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            if s_out.pending:
                to_server.write(s_out.read())
            if to_client.pending:
                s_in.write(to_client.read())
    with contextlib.suppress(ssl.SSLWantReadError):
        client.read()  # TLS 1.3 tickets arrive after the handshake
    return client


def sessions(ca: Path, pair: tuple[Path, Path], rounds: int) -> dict[str, Any]:
    """Full handshakes/s with tickets issued (the router's policy) and without (the same
    policy with OP_NO_TICKET, as before tickets), and resumed handshakes/s from a ticket,
    TLS 1.3 and 1.2, in this process through the router's listener."""
    import logging

    from router.config.models import ListenerTls
    from router.tls.listener import HandshakeCounts, TlsListener, policy
    from router.tls.store import CertificateStore

    logging.disable(logging.WARNING)  # the benchmark's certificates expire within a day
    make = policy(ListenerTls())

    def without_tickets() -> ssl.SSLContext:
        context = make()
        context.options |= ssl.OP_NO_TICKET
        return context

    listeners = {}
    for label, maker in (("tickets", make), ("no tickets", without_tickets)):
        store = CertificateStore(policies={"https": maker})
        store.put("file:0", pair[0].read_bytes(), pair[1].read_bytes())
        listeners[label] = TlsListener("https", store, maker, HandshakeCounts())
    rows = []
    print()
    print(f"{'in process, sessions':<28} {'full hs/s':>10} {'resumed hs/s':>13} {'vs full':>8}")
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        client = ssl.create_default_context(cafile=str(ca))
        client.minimum_version = client.maximum_version = version
        full: dict[str, list[float]] = {label: [] for label in listeners}
        resumed: list[float] = []
        for _ in range(rounds):
            for label, listener in listeners.items():
                started = time.perf_counter()
                for _ in range(200):
                    handshake_once(listener.context, client)
                full[label].append(200 / (time.perf_counter() - started))
            context = listeners["tickets"].context
            session = handshake_once(context, client).session
            started = time.perf_counter()
            for _ in range(200):
                resumption = handshake_once(context, client, session)
                assert resumption.session_reused
            resumed.append(200 / (time.perf_counter() - started))
        for label in listeners:
            rate = statistics.median(full[label])
            again = statistics.median(resumed) if label == "tickets" else None
            name = f"TLS {version.name.replace('TLSv1_', '1.')}, {label}"
            shown = f"{again:>13,.0f} {again / rate:>8.2f}" if again else f"{'':>13} {'':>8}"
            print(f"{name:<28} {rate:>10,.0f} {shown}")
            rows.append(
                {
                    "version": version.name,
                    "policy": label,
                    "full_per_s": rate,
                    "resumed_per_s": again,
                }
            )
    return {"sessions": rows}


def in_process(ca: Path, pairs: list[tuple[Path, Path]], rounds: int) -> dict[str, Any]:
    """Handshakes/s and SNI lookups through the router's own store and SNI callback, in
    this process (no network, no event loop): the part that depends on how many
    certificates are loaded, measured without the noise of a shared machine's scheduler."""
    import logging

    from router.config.models import ListenerTls
    from router.tls.listener import HandshakeCounts, TlsListener, policy
    from router.tls.store import CertificateStore

    logging.disable(logging.WARNING)
    client = ssl.create_default_context(cafile=str(ca))
    client.options |= ssl.OP_NO_TICKET
    listeners = {}
    for count in COUNTS:
        store = CertificateStore(policies={"https": policy(ListenerTls())})
        for index, (cert, key) in enumerate(pairs[:count]):
            store.put(f"file:{index}", cert.read_bytes(), key.read_bytes())
        listeners[count] = TlsListener("https", store, policy(ListenerTls()), HandshakeCounts())
        handshake_once(listeners[count].context, client)  # makes the localhost context
    rates: dict[int, list[float]] = {count: [] for count in COUNTS}
    lookups: dict[int, list[float]] = {count: [] for count in COUNTS}
    for _ in range(rounds):
        for count, listener in listeners.items():
            started = time.perf_counter()
            for _ in range(200):
                handshake_once(listener.context, client)
            rates[count].append(200 / (time.perf_counter() - started))
            lookup = listener.store.lookup
            started = time.perf_counter()
            for _ in range(100_000):
                lookup("localhost")
                lookup("www.site1.bench.test")
            lookups[count].append((time.perf_counter() - started) / 200_000 * 1e9)
    print()
    print(f"{'in process':<22} {'handshakes/s':>13} {'vs 1 cert':>10} {'SNI lookup ns':>14}")
    rows = []
    for count in COUNTS:
        ratio = statistics.median(
            a / b for a, b in zip(rates[count], rates[COUNTS[0]], strict=True)
        )
        rate, lookup_ns = statistics.median(rates[count]), statistics.median(lookups[count])
        label = f"{count:,} certificate{'s' if count > 1 else ''}"
        print(f"{label:<22} {rate:>13,.0f} {ratio:>10.2f} {lookup_ns:>14.0f}")
        rows.append(
            {
                "certificates": count,
                "handshakes_per_s": rate,
                "vs_one": ratio,
                "lookup_ns": lookup_ns,
            }
        )
    return {"in_process": rows}


# -- run -------------------------------------------------------------------------------


def run_all(args: argparse.Namespace, nginx: str, wrk: str, workdir: Path) -> dict[str, Any]:
    placement = bench.Placement(not args.no_pin)
    keep_alive = workdir / "report.lua"
    keep_alive.write_text(bench.WRK_DONE_SCRIPT)
    close = workdir / "close.lua"
    close.write_text(CLOSE_SCRIPT)
    procs = bench.Processes(workdir)
    certificates = workdir / "certs"
    certificates.mkdir()
    made = time.monotonic()
    ca, pairs = write_certificates(certificates, max(COUNTS))
    print(f"{max(COUNTS):,} certificates written in {time.monotonic() - made:.1f} s", flush=True)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        backend = bench.start_nginx(procs, nginx, workdir, placement)
        targets = [start_nginx_tls(procs, nginx, workdir, backend, pairs[0], placement)]
        wait_tls(procs, "nginx-tls", targets[0], ca)
        # One at a time, so that each start-up time is its own.
        for count in COUNTS:
            targets.append(start_router(procs, workdir, backend, pairs[:count], placement)[0])
            wait_tls(procs, f"router-{count}", targets[-1], ca)
        pinning = (
            f"wrk and the backend on CPU {placement.client_cpu}, the TLS terminators on CPU "
            f"{placement.server_cpu}"
            if placement.enabled
            else "no CPU pinning"
        )
        print(f"backend nginx at {backend}; {pinning}", flush=True)
        for target in targets:
            print(f"  {target.label:<22} serving after {target.ready_s:5.1f} s", flush=True)
        # Warm-up (wrk sends SNI localhost; it does not verify certificates).
        for target in targets:
            bench.run_wrk(wrk, target.url + "/small", 1, 16, close, placement)
        results = {t.label: {"handshakes": [], "requests": []} for t in targets}
        for number in range(1, args.rounds + 1):
            for target in targets:
                for mode, script, connections in (
                    ("handshakes", close, 16),
                    ("requests", keep_alive, args.connections),
                ):
                    data = bench.run_wrk(
                        wrk, target.url + "/small", args.duration, connections, script, placement
                    )
                    row = bench.Result.from_wrk(target.label, "13 B", "/small", data)
                    if row.errors:
                        raise bench.BenchError(f"{target.label} {mode}: {row.errors} errors")
                    results[target.label][mode].append(row.requests_per_s)
            print(
                f"  round {number}/{args.rounds}: "
                + ", ".join(
                    f"{label} {r['handshakes'][-1]:,.0f} hs/s {r['requests'][-1]:,.0f} req/s"
                    for label, r in results.items()
                ),
                flush=True,
            )
        memory = {t.label: rss_mib(t.pid) for t in targets}
    finally:
        procs.stop_all()
    document = report(results, memory, targets)
    document.update(in_process(ca, pairs, args.rounds))
    document.update(sessions(ca, pairs[0], args.rounds))
    return document


def report(
    results: dict[str, dict[str, list[float]]], memory: dict[str, float], targets: list[Target]
) -> dict[str, Any]:
    medians = {
        label: {mode: statistics.median(values) for mode, values in modes.items()}
        for label, modes in results.items()
    }

    def paired(label: str, base: str, mode: str) -> float:
        """Median over rounds of the ratio of two targets measured in the same round."""
        ratios = [
            value / reference
            for value, reference in zip(results[label][mode], results[base][mode], strict=True)
            if reference > 0
        ]
        return statistics.median(ratios) if ratios else 0.0

    one = targets[1].label
    print()
    print(
        f"{'target':<22} {'handshakes/s':>13} {'req/s (kept)':>13} {'vs 1 cert':>16} "
        f"{'vs nginx':>16} {'RSS MiB':>8} {'ready s':>8}"
    )
    rows = []
    for target in targets:
        m = medians[target.label]
        ratios = {
            f"{mode}_vs_{name}": paired(target.label, base, mode)
            for mode in ("handshakes", "requests")
            for name, base in (("one_certificate", one), ("nginx", "nginx TLS"))
        }
        versus_one = (
            f"{ratios['handshakes_vs_one_certificate']:.2f} / "
            f"{ratios['requests_vs_one_certificate']:.2f}"
        )
        versus_nginx = f"{ratios['handshakes_vs_nginx']:.2f} / {ratios['requests_vs_nginx']:.2f}"
        print(
            f"{target.label:<22} {m['handshakes']:>13,.0f} {m['requests']:>13,.0f} "
            f"{versus_one:>16} {versus_nginx:>16} {memory[target.label]:>8.0f} "
            f"{target.ready_s:>8.1f}"
        )
        rows.append(
            {
                "target": target.label,
                "handshakes_per_s": m["handshakes"],
                "requests_per_s": m["requests"],
                **ratios,
                "rss_mib": memory[target.label],
                "ready_s": target.ready_s,
                "slices": results[target.label],
            }
        )
    print("(ratios: handshakes / requests; median over the rounds of same-round ratios)")
    return {"benchmark": "tls", "commit": bench.git_commit(), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per slice")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, targets interleaved")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c for requests")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = parser.parse_args(argv)
    return bench.execute(
        "benchmarks/tls.py",
        "commons-router-tls-bench-",
        lambda nginx, wrk, workdir: run_all(args, nginx, wrk, workdir),
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
