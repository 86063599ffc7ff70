"""Slow request bodies against the router: how many backend connections they hold.

    .venv/bin/python benchmarks/slow_bodies.py [--clients 200] [--seconds 8]

Like ``slowhttptest -B``: each client declares ``Content-Length: 1000000`` and sends 10
bytes a second. Three configurations of the same router, one after the other, each with
a backend that counts the connections it accepts (everything on 127.0.0.1):

* streaming (the baseline: ``request_buffer_size: 0``, ``body_min_rate: 0``),
* buffered (``request_buffer_size`` default 1 MiB, ``body_min_rate: 0``),
* buffered with the minimum rate (defaults, ``body_rate_grace: 3s``).

Prints, per configuration, the backend connections open after 2 s and in all, and how
the clients ended (answer status or still open at ``--seconds``) with the median time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import Counter
from typing import Any

from router.testing import run_router

_HEAD = b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 1000000\r\n\r\n"


async def _slow_client(port: int, seconds: float) -> tuple[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    try:
        writer.write(_HEAD)
        while time.monotonic() - start < seconds:
            writer.write(b"x" * 10)
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(64), 1.0)
            except TimeoutError:
                continue
            outcome = answer[9:12].decode() if answer else "closed"
            return outcome, time.monotonic() - start
        return "still open", seconds
    except ConnectionError:
        return "reset", time.monotonic() - start
    finally:
        writer.close()


async def _measure(limits: dict[str, Any], clients: int, seconds: float) -> str:
    accepted = 0

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read()  # never complete: the clients never finish their bodies
        writer.close()

    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = {
        "access_log": {"enabled": False},
        "limits": {"body_timeout": "30s", **limits},
        "routes": [{"name": "app", "upstreams": [{"url": f"http://127.0.0.1:{port}"}]}],
    }
    try:
        async with run_router(config) as router:
            tasks = [
                asyncio.create_task(_slow_client(router.port, seconds)) for _ in range(clients)
            ]
            await asyncio.sleep(2.0)
            after_two = accepted
            results = await asyncio.gather(*tasks)
    finally:
        server.close()
    outcomes = Counter(outcome for outcome, _ in results)
    median = statistics.median(elapsed for _, elapsed in results)
    ended = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
    return f"{after_two:>6} {accepted:>6}   {ended} (median {median:.1f} s)"


async def _main(clients: int, seconds: float) -> None:
    configurations = [
        ("streaming (baseline)", {"request_buffer_size": 0, "body_min_rate": 0}),
        ("buffered", {"body_min_rate": 0}),
        ("buffered + min rate", {"body_rate_grace": "3s"}),
    ]
    print(f"{clients} clients, 10 B/s each; backend connections after 2 s, in all; outcome")
    for name, limits in configurations:
        print(f"{name:<22}{await _measure(limits, clients, seconds)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    asyncio.run(_main(args.clients, args.seconds))


if __name__ == "__main__":
    main()
