"""Process level: uvloop, signals, graceful drain, and ``--workers N``.

One worker: the process runs the router itself. Several: this process supervises N worker
processes that share the public port (SO_REUSEPORT), restarts any that die, forwards
SIGTERM/SIGHUP, and serves the admin listener itself, merging the workers' metrics.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop

from router.app import RouterRuntime, locate_issues
from router.config.loader import ConfigError, LoadedConfig, report_invalid_config
from router.observability.logs import configure_logging

__all__ = ["configure_logging", "serve"]

logger = logging.getLogger("commons_router.server")


def settle_garbage_collector() -> None:
    """Move everything built at start-up out of the collector's sight, and collect less
    often: per-request garbage is short-lived and freed by reference counting, while each
    full collection walked the ~80k start-up objects (tens of ms, straight into p99)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


async def _stop_when_orphaned(stop: asyncio.Event, parent: int) -> None:
    # A worker whose supervisor died (even by SIGKILL) is re-parented: drain and exit
    # rather than serve on unsupervised.
    while os.getppid() == parent:  # noqa: ASYNC110 - re-parenting raises no event to wait on
        await asyncio.sleep(1.0)
    logger.warning("supervisor %d is gone; draining", parent)
    stop.set()


async def run_until_signalled(runtime: RouterRuntime, *, supervised: bool = False) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, runtime.request_reload)
    loop.add_signal_handler(signal.SIGUSR1, runtime.reopen_logs)
    await runtime.start()
    settle_garbage_collector()
    orphan_watch = (
        asyncio.create_task(_stop_when_orphaned(stop, os.getppid())) if supervised else None
    )
    try:
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
        if orphan_watch is not None:
            orphan_watch.cancel()
    await runtime.drain()
    logger.info("stopped")


def serve(
    loaded: LoadedConfig,
    *,
    config_path: Path | None,
    dev_mode: bool = False,
    worker_index: int | None = None,
    admin_unix_path: str | None = None,
    routes_socket: str | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    if loaded.config.workers > 1 and worker_index is None:
        from router.workers import supervise

        return supervise(loaded, config_path=config_path)
    runtime = RouterRuntime(
        loaded,
        config_path=config_path,
        dev_mode=dev_mode,
        reuse_port=worker_index is not None,
        admin_unix_path=admin_unix_path,
        routes_socket=routes_socket,
    )
    try:
        uvloop.run(run_until_signalled(runtime, supervised=worker_index is not None))
    except ConfigError as exc:
        report_invalid_config(locate_issues(exc, loaded))
        return 1
    except OSError as exc:
        print(f"commons-router: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
