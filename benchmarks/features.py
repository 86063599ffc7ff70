"""Cost of tracing and provenance signing, as ratios to the same run's plain aiohttp proxy.

    .venv/bin/python benchmarks/features.py [--duration 2] [--warmup 1] [--rounds 5]
                                            [--json FILE]

Reuses benchmarks/run.py (nginx upstream, wrk, CPU placement, process handling). All
targets run at once, pinned to the server CPU and idle until loaded:

* benchmarks/baseline_proxy.py (plain aiohttp + uvloop proxy: the baseline),
* commons-router, one worker, no plugins,
* + tracing, sampling 1.0 (every request recorded and exported over OTLP/HTTP),
* + tracing, sampling 0.01,
* + provenance (header and Ed25519 signature on every response),
* + tracing 0.01 and provenance ("everything on"; target >= 0.8x the baseline),
* + tracing 0.01 and provenance with ``sign: requested`` (header only; wrk asks for no
  signature).

Each round loads them in turn with ``wrk -t1 -c64`` for ``--duration`` seconds, with a
baseline slice before every target and one after the last (B T1 B T2 ... B), for each body.
A target's ratio in a round is its slice over the mean of the two baseline slices around
it, so a drift in whatever else the machine runs cancels out; the figure reported (and the
verdict) is the median over rounds. Ratios are given by req/s and by the CPU time the
target process used per request (all its threads). Spans are exported to nginx (which
answers 200 to the OTLP POSTs), so the export thread's work counts; after a tracing slice
the run waits a second for the exporter to send what it queued. Exit status as for run.py:
0 ran, 1 tools missing, 2 a target failed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402

TARGET_RATIO = 0.8
SETTLE_S = 1.0
BASELINE = "aiohttp baseline"
EVERYTHING = "tracing 0.01 + prov signed"


def plugin_sets(collector: str | None, key_file: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each target's label and plugins; spans go to ``collector`` over OTLP/HTTP (None:
    recorded, not exported)."""

    def tracing(ratio: float) -> dict[str, Any]:
        if collector is None:
            return {"name": "tracing", "config": {"sampling_ratio": ratio, "exporter": "none"}}
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
    series: dict[str, dict[str, list[bench.Result]]] = {}
    paired: dict[str, dict[str, list[tuple[float, float]]]] = {}
    try:
        upstream = bench.start_nginx(procs, nginx, workdir, placement)
        targets = start_targets(procs, workdir, placement, upstream, write_key(workdir))
        print(
            f"upstream nginx at {upstream}; {placement.describe()}; {args.rounds} rounds of "
            f"{args.duration:g} s slices, a baseline slice around every target",
            flush=True,
        )

        def load(target: Target, body: str, path: str, seconds: float) -> bench.Result:
            before = bench.cpu_seconds(target.pid)
            data = bench.run_wrk(
                wrk, target.url + path, seconds, args.connections, script, placement
            )
            used = bench.cpu_seconds(target.pid) - before
            result = bench.Result.from_wrk(target.label, body, path, data)
            result.extra["cpu_us_per_request"] = (
                used / result.requests * 1e6 if result.requests else 0.0
            )
            if target.exports_spans:
                time.sleep(SETTLE_S)  # the exporter sends what this slice queued
            return result

        baseline = targets[0]
        for body, path, _size in bench.BODIES:
            if args.warmup > 0:
                for target in targets:
                    load(target, body, path, args.warmup)
            slices: dict[str, list[bench.Result]] = {target.label: [] for target in targets}
            pairs: dict[str, list[tuple[float, float]]] = {t.label: [] for t in targets[1:]}
            for number in range(1, args.rounds + 1):
                before = load(baseline, body, path, args.duration)
                slices[BASELINE].append(before)
                shown = []
                for target in targets[1:]:
                    current = load(target, body, path, args.duration)
                    after = load(baseline, body, path, args.duration)
                    slices[target.label].append(current)
                    slices[BASELINE].append(after)
                    pair = paired_ratios(before, current, after)
                    pairs[target.label].append(pair)
                    shown.append(f"{pair[0]:.2f}")
                    before = after
                print(f"  {body:>6} round {number}/{args.rounds}: {' '.join(shown)}", flush=True)
            series[body] = slices
            paired[body] = pairs
        for name, proc in procs.procs.items():
            if proc.poll() is not None:
                raise bench.BenchError(f"{name} died during the run:\n{procs.log_tail(name)}")
    finally:
        procs.stop_all()
    return report(series, paired, args)


def cpu_of(result: bench.Result) -> float:
    """CPU µs per request of one slice (set by ``load``)."""
    return float(result.extra["cpu_us_per_request"])


def paired_ratios(
    before: bench.Result, current: bench.Result, after: bench.Result
) -> tuple[float, float]:
    """A target slice against the mean of the baseline slices around it: (req/s, CPU)."""
    base_speed = (before.requests_per_s + after.requests_per_s) / 2
    base_cpu = (cpu_of(before) + cpu_of(after)) / 2
    speed = current.requests_per_s / base_speed if base_speed else 0.0
    cpu = base_cpu / cpu_of(current) if cpu_of(current) else 0.0
    return speed, cpu


@dataclass
class Target:
    label: str
    url: str
    pid: int
    exports_spans: bool


def start_targets(
    procs: bench.Processes,
    workdir: Path,
    placement: bench.Placement,
    upstream: str,
    key_file: Path,
) -> list[Target]:
    """The baseline first, then one router per plugin set, all running at once."""
    cmd, url = bench.baseline_command(upstream)
    procs.start("baseline", [*placement.prefix(placement.server_cpu), *cmd])
    bench.wait_ready(procs, "baseline", url + "/")
    bench.verify_bodies(url, BASELINE, expect_request_id=False)
    targets = [Target(BASELINE, url, procs.procs["baseline"].pid, False)]
    for index, (label, plugins) in enumerate(plugin_sets(upstream + "/", key_file)):
        name = f"router-{index}"
        cmd, url, ready = bench.router_with_plugins(workdir, name, upstream, plugins, placement)
        procs.start(name, cmd)
        bench.wait_ready(procs, name, ready)
        bench.verify_bodies(url, label, expect_request_id=True)
        tracing = any(plugin["name"] == "tracing" for plugin in plugins)
        targets.append(Target(label, url, procs.procs[name].pid, tracing))
    return targets


def report(
    series: dict[str, dict[str, list[bench.Result]]],
    paired: dict[str, dict[str, list[tuple[float, float]]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Per target: median req/s and CPU per request, and the medians of its paired ratios."""
    print()
    header = (
        f"{'body':<7} {'target':<30} {'req/s':>7} {'ratio':>6} {'CPU µs/req':>10} "
        f"{'CPU ratio':>9}  req/s ratio per round"
    )
    print(header)
    print("-" * len(header))
    ratios: dict[str, dict[str, float]] = {}
    cpu_table: dict[str, dict[str, dict[str, float]]] = {}
    for body, slices in series.items():
        for target, rows in slices.items():
            pairs = paired[body].get(target, [(1.0, 1.0)])
            ratio = statistics.median(speed for speed, _ in pairs)
            cpu_ratio = statistics.median(cpu for _, cpu in pairs)
            cpu = statistics.median(cpu_of(row) for row in rows)
            speed = statistics.median(row.requests_per_s for row in rows)
            ratios.setdefault(body, {})[target] = round(ratio, 3)
            cpu_table.setdefault(body, {})[target] = {
                "cpu_us_per_request": round(cpu, 1),
                "cpu_ratio": round(cpu_ratio, 3),
            }
            shown = " ".join(f"{s:.2f}" for s, _ in pairs) if target != BASELINE else ""
            print(
                f"{body:<7} {target:<30} {speed:>7,.0f} {ratio:>6.2f} {cpu:>10.1f} "
                f"{cpu_ratio:>9.2f}  {shown}"
            )
        everything = ratios[body].get(EVERYTHING, 0.0)
        everything_cpu = cpu_table[body].get(EVERYTHING, {}).get("cpu_ratio", 0.0)
        verdict = "PASS" if everything >= TARGET_RATIO else "FAIL"
        print(
            f"{body:<7} everything on / baseline = {everything:.2f} by req/s, "
            f"{everything_cpu:.2f} by CPU per request (target >= {TARGET_RATIO}): {verdict}"
        )
        print()
    errors = sum(
        row.errors for slices in series.values() for rows in slices.values() for row in rows
    )
    if errors:
        print(f"WARNING: {errors} errors during the measurements")
    return {
        "settings": {
            "slice_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "rounds": args.rounds,
        },
        "slices": {
            body: {
                target: [{**row.__dict__, "errors": row.errors} for row in rows]
                for target, rows in slices.items()
            }
            for body, slices in series.items()
        },
        "ratio_to_baseline": ratios,
        "cpu_per_request": cpu_table,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_common_arguments(parser, duration=2.0, warmup=1.0)
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
