"""Cost of tracing and provenance signing, as ratios to the same run's plain aiohttp proxy.

    .venv/bin/python benchmarks/features.py [--duration 5] [--warmup 1] [--rounds 3]
                                            [--json FILE]

Reuses benchmarks/run.py (nginx upstream, wrk, CPU placement, process handling). Each
round measures, one after the other, with ``wrk -t1 -c64`` and both bodies:

* benchmarks/baseline_proxy.py (plain aiohttp + uvloop proxy: the baseline),
* commons-router, one worker, no plugins,
* + tracing, sampling 1.0 (every request recorded and exported over OTLP/HTTP),
* + tracing, sampling 0.01,
* + provenance (header and Ed25519 signature on every response),
* + tracing 0.01 and provenance ("everything on"; target >= 0.8x the baseline),
* + tracing 0.01 and provenance with ``sign: requested`` (header only; wrk asks for no
  signature).

Spans are exported to nginx (which answers 200 to the OTLP POSTs), so the export thread's
work counts. For each target it prints req/s and the CPU time the target process used per
request (all its threads), each as a ratio to the same round's baseline, as the median over
rounds and (for CPU) the least-disturbed round. CPU per request is what decides the verdict:
on a shared machine req/s swings with whatever else runs. Exit status as for run.py: 0 ran,
1 tools missing, 2 a target failed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402

TARGET_RATIO = 0.8
BASELINE = "aiohttp baseline"
EVERYTHING = "tracing 0.01 + prov signed"


def plugin_sets(collector: str, key_file: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    def tracing(ratio: float) -> dict[str, Any]:
        return {
            "name": "tracing",
            "config": {"sampling_ratio": ratio, "exporter": "otlp_http", "endpoint": collector},
        }

    def provenance(sign: str) -> dict[str, Any]:
        return {"name": "provenance", "config": {"key_file": str(key_file), "sign": sign}}

    return [
        ("router (no plugins)", []),
        ("router + tracing 1.0", [tracing(1.0)]),
        ("router + tracing 0.01", [tracing(0.01)]),
        ("router + provenance (signed)", [provenance("always")]),
        (EVERYTHING, [tracing(0.01), provenance("always")]),
        ("tracing 0.01 + prov unsigned", [tracing(0.01), provenance("requested")]),
    ]


def write_key(workdir: Path) -> Path:
    path = workdir / "provenance.pem"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def run_all(args: argparse.Namespace, nginx: str, wrk: str, workdir: Path) -> dict[str, Any]:
    placement = bench.Placement(not args.no_pin)
    script = workdir / "report.lua"
    script.write_text(bench.WRK_DONE_SCRIPT)
    procs = bench.Processes(workdir)
    rounds: list[list[bench.Result]] = []
    try:
        upstream = bench.start_nginx(procs, nginx, workdir, placement)
        print(f"upstream nginx at {upstream}; {placement.describe()}", flush=True)
        key_file = write_key(workdir)
        for number in range(1, args.rounds + 1):
            print(f"round {number} of {args.rounds}", flush=True)
            rounds.append(
                one_round(args, wrk, workdir, procs, placement, script, upstream, key_file)
            )
    finally:
        procs.stop_all()
    return report(rounds, args)


def one_round(
    args: argparse.Namespace,
    wrk: str,
    workdir: Path,
    procs: bench.Processes,
    placement: bench.Placement,
    script: Path,
    upstream: str,
    key_file: Path,
) -> list[bench.Result]:
    """The baseline, then every plugin set, measured back to back (one ratio each)."""
    results: list[bench.Result] = []
    port = bench.free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        *placement.prefix(placement.server_cpu),
        sys.executable,
        str(HERE / "baseline_proxy.py"),
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        upstream,
    ]
    with bench.target_process(procs, "baseline", cmd, url + "/") as proc:
        results += measure(wrk, BASELINE, url, args, script, placement, proc.pid)

    for index, (label, plugins) in enumerate(plugin_sets(upstream + "/", key_file)):
        name = f"router-{index}"
        cmd, url, ready = bench.router_with_plugins(
            workdir, name, upstream, plugins, placement
        )
        with bench.target_process(procs, name, cmd, ready) as proc:
            bench.verify_bodies(url, label, expect_request_id=True)
            results += measure(wrk, label, url, args, script, placement, proc.pid)
    return results


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def measure(
    wrk: str,
    target: str,
    base_url: str,
    args: argparse.Namespace,
    script: Path,
    placement: bench.Placement,
    pid: int,
) -> list[bench.Result]:
    """Like run.py's measure, plus the target's CPU time per request during the run.

    CPU time per request hardly depends on what else the machine runs (unlike req/s), so
    its ratio is the steadier measure of a feature's cost on a shared machine.
    """
    results = []
    for body, path, _size in bench.BODIES:
        url = base_url + path
        if args.warmup > 0:
            bench.run_wrk(wrk, url, args.warmup, args.connections, script, placement)
        before = cpu_seconds(pid)
        data = bench.run_wrk(wrk, url, args.duration, args.connections, script, placement)
        used = cpu_seconds(pid) - before
        requests = int(data["requests"])
        result = bench.Result.from_wrk(
            target,
            body,
            path,
            data,
            {"cpu_us_per_request": used / requests * 1e6 if requests else 0.0},
        )
        print(
            f"  {target:<30} {body:>7}  {result.requests_per_s:>9,.0f} req/s  "
            f"{result.extra['cpu_us_per_request']:6.1f} CPU µs/req  errors {result.errors}",
            flush=True,
        )
        results.append(result)
    return results


def report(rounds: list[list[bench.Result]], args: argparse.Namespace) -> dict[str, Any]:
    """Per round, each target's req/s over that round's baseline; the median over rounds."""
    print()
    header = (
        f"{'body':<7} {'target':<30} {'req/s':>7} {'ratio':>6} {'CPU µs/req':>10} "
        f"{'CPU ratio':>9} {'best CPU':>8} {'ratio':>6}  req/s ratio per round"
    )
    print(header)
    print("-" * len(header))
    ratios: dict[str, dict[str, float]] = {}
    cpu_table: dict[str, dict[str, dict[str, float]]] = {}
    for body, _, _ in bench.BODIES:
        targets = [r.target for r in rounds[0] if r.body == body]
        for target in targets:
            per_round, speeds, cpu, cpu_ratios = [], [], [], []
            for results in rounds:
                rows = {r.target: r for r in results if r.body == body}
                base, row = rows[BASELINE], rows[target]
                speeds.append(row.requests_per_s)
                per_round.append(
                    row.requests_per_s / base.requests_per_s if base.requests_per_s else 0
                )
                cpu.append(row.extra["cpu_us_per_request"])
                cpu_ratios.append(
                    base.extra["cpu_us_per_request"] / row.extra["cpu_us_per_request"]
                    if row.extra["cpu_us_per_request"]
                    else 0
                )
            ratio = statistics.median(per_round)
            cpu_ratio = statistics.median(cpu_ratios)
            # The least CPU a target needed in any round is the least disturbed figure.
            best_base = min(
                r.extra["cpu_us_per_request"]
                for results in rounds
                for r in results
                if r.body == body and r.target == BASELINE
            )
            best_ratio = best_base / min(cpu) if min(cpu) else 0.0
            ratios.setdefault(body, {})[target] = round(ratio, 3)
            cpu_table.setdefault(body, {})[target] = {
                "cpu_us_per_request": round(statistics.median(cpu), 1),
                "cpu_ratio": round(cpu_ratio, 3),
                "best_cpu_us_per_request": round(min(cpu), 1),
                "best_cpu_ratio": round(best_ratio, 3),
            }
            shown = " ".join(f"{value:.2f}" for value in per_round)
            print(
                f"{body:<7} {target:<30} {statistics.median(speeds):>7,.0f} {ratio:>6.2f} "
                f"{statistics.median(cpu):>10.1f} {cpu_ratio:>9.2f} {min(cpu):>8.1f} "
                f"{best_ratio:>6.2f}  {shown}"
            )
        everything = ratios.get(body, {}).get(EVERYTHING, 0.0)
        everything_cpu = cpu_table.get(body, {}).get(EVERYTHING, {}).get("best_cpu_ratio", 0.0)
        # Judged by CPU per request: req/s swings with whatever else the machine runs.
        verdict = "PASS" if everything_cpu >= TARGET_RATIO else "FAIL"
        print(
            f"{body:<7} everything on / baseline = {everything:.2f} req/s, "
            f"{everything_cpu:.2f} by best CPU per request (target >= 0.8): {verdict}"
        )
        print()
    errors = sum(r.errors for results in rounds for r in results)
    if errors:
        print(f"WARNING: {errors} errors during the measurements")
    return {
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "rounds": args.rounds,
        },
        "rounds": [[{**r.__dict__, "errors": r.errors} for r in results] for results in rounds],
        "ratio_to_baseline": ratios,
        "cpu_per_request": cpu_table,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_common_arguments(parser, duration=5.0, warmup=1.0)
    parser.add_argument("--rounds", type=int, default=5, help="baseline/target rounds (median)")
    args = parser.parse_args(argv)
    return bench.execute(
        "benchmarks/features.py",
        "commons-router-features-",
        lambda nginx, wrk, workdir: run_all(args, nginx, wrk, workdir),
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
