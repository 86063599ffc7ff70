"""Instructions per request of the baseline and of each feature, counted by callgrind.

    .venv/bin/python benchmarks/instructions.py [--duration 10] [--warmup 2]
                                                [--connections 16] [--json FILE]

The same targets as benchmarks/features.py (plain aiohttp baseline proxy; one router worker
with no plugins, tracing 1.0 and 0.01, signed provenance, both, both unsigned), each run in
turn under ``valgrind --tool=callgrind`` with counting off while it starts. After a warm-up
the count is switched on (``callgrind_control -i on``), ``wrk`` loads the target for
``--duration`` seconds, and the count is dumped: user-space instructions per request served.
Spans are recorded but not exported: export runs on a timer, so at valgrind's much slower
request rate its cost would be spread over far fewer requests than in a real run.

Unlike req/s and CPU time these counts do not follow whatever else the machine runs (only
the number of requests over which periodic work is spread changes; two runs agreed within
1.4 %), so they tell what each feature costs even on a noisy machine. They leave out the
kernel's share (socket system calls, about half of a small proxied request) and differences
in instructions per cycle (the Ed25519 arithmetic runs many more per cycle than the Python
interpreter does), so they are a cost breakdown, not a throughput forecast. Needs valgrind,
nginx and wrk. Exit status as for run.py.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import features  # noqa: E402
import run as bench  # noqa: E402

STARTUP_S = 300.0
"""Python under valgrind starts 20-50 times slower than without."""


def callgrind_command(out_file: Path) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_file}",
    ]


def dumped_instructions(out_file: Path) -> int:
    """The instruction total of the dumps callgrind wrote for ``out_file`` (``.1``, …)."""
    total = 0
    for dump in out_file.parent.glob(out_file.name + ".*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return total


def count(
    args: argparse.Namespace,
    wrk: str,
    procs: bench.Processes,
    placement: bench.Placement,
    script: Path,
    name: str,
    cmd: list[str],
    url: str,
    ready: str,
) -> int:
    """Load one target with counting on; the requests it served meanwhile."""
    proc = procs.start(name, cmd)
    try:
        bench.wait_ready(procs, name, ready, deadline_s=STARTUP_S)
        if args.warmup > 0:
            bench.run_wrk(wrk, url, args.warmup, args.connections, script, placement)
        control = ["callgrind_control", "-i", "on", str(proc.pid)]
        if subprocess.run(control, capture_output=True, check=False).returncode != 0:
            raise bench.BenchError(f"{name}: callgrind_control could not switch counting on")
        data = bench.run_wrk(wrk, url, args.duration, args.connections, script, placement)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=False)
        time.sleep(0.5)
    finally:
        procs.stop(name)
    return int(data["requests"])


def run_all(args: argparse.Namespace, nginx: str, wrk: str, workdir: Path) -> dict[str, Any]:
    placement = bench.Placement(not args.no_pin)
    script = workdir / "report.lua"
    script.write_text(bench.WRK_DONE_SCRIPT)
    procs = bench.Processes(workdir)
    rows: list[dict[str, Any]] = []
    path = bench.BODIES[0][1]
    try:
        upstream = bench.start_nginx(procs, nginx, workdir, placement)
        prefix = placement.prefix(placement.server_cpu)
        base_cmd, base_url = bench.baseline_command(upstream)
        targets = [(features.BASELINE, "baseline", base_cmd, base_url, base_url + "/")]
        key_file = features.write_key(workdir)
        for index, (label, plugins) in enumerate(features.plugin_sets(None, key_file)):
            name = f"router-{index}"
            cmd, url, ready = bench.router_with_plugins(workdir, name, upstream, plugins, placement)
            targets.append((label, name, cmd[len(prefix) :], url, ready))
        print(
            f"upstream nginx at {upstream}; {args.duration:g} s of wrk -c{args.connections} "
            f"on {path} per target, counted by callgrind",
            flush=True,
        )
        for label, name, cmd, url, ready in targets:
            out_file = workdir / f"{name}.callgrind"
            requests = count(
                args,
                wrk,
                procs,
                placement,
                script,
                name,
                [*prefix, *callgrind_command(out_file), *cmd],
                url + path,
                ready,
            )
            instructions = dumped_instructions(out_file)
            if not requests or not instructions:
                raise bench.BenchError(f"{label}: no requests or no instruction count")
            rows.append(
                {
                    "target": label,
                    "requests": requests,
                    "instructions_per_request": round(instructions / requests),
                }
            )
            print(
                f"  {label:<30} {requests:>6} requests  "
                f"{instructions / requests / 1000:8.1f} k instructions/request",
                flush=True,
            )
    finally:
        procs.stop_all()
    return report(rows, args)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    baseline = rows[0]["instructions_per_request"]
    router = rows[1]["instructions_per_request"]
    print()
    header = f"{'target':<30} {'k instr/req':>11} {'baseline / target':>17} {'over router':>11}"
    print(header)
    print("-" * len(header))
    for row in rows:
        per_request = row["instructions_per_request"]
        row["ratio_to_baseline"] = round(baseline / per_request, 3)
        row["over_router"] = per_request - router
        over = f"{(per_request - router) / 1000:+10.1f}k" if row is not rows[0] else ""
        print(
            f"{row['target']:<30} {per_request / 1000:>11.1f} "
            f"{row['ratio_to_baseline']:>17.2f} {over:>11}"
        )
    return {
        "settings": {"duration_s": args.duration, "connections": args.connections},
        "targets": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_common_arguments(parser, duration=10.0, warmup=2.0)
    parser.set_defaults(connections=16)
    args = parser.parse_args(argv)
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        print(
            f"benchmarks/instructions.py: {' and '.join(missing)} not found; install valgrind "
            "(Debian/Ubuntu: sudo apt-get install -y valgrind).",
            file=sys.stderr,
        )
        return 1
    return bench.execute(
        "benchmarks/instructions.py",
        "commons-router-instructions-",
        lambda nginx, wrk, workdir: run_all(args, nginx, wrk, workdir),
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
