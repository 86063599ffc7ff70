"""Graceful stop of the public listener: ``Connection: close`` while draining, then a cut
at exactly ``drain.grace``.

aiohttp's own shutdown gives each connection its timeout twice (once to finish, once more
after asking the request to stop, and rounds both up to whole seconds above 5 s): a grace
of 6 s cut requests after ~14 s, past a Kubernetes ``terminationGracePeriodSeconds`` sized
from the configuration. Here the whole wait is one deadline, and whatever is still running
then is closed at once.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

logger = logging.getLogger("commons_router")

_UNWIND_TURNS = 3


class DrainSignal:
    """Set when the process starts draining; read by every response on the public
    listener, which then says ``Connection: close`` so keep-alive clients move to another
    instance after their answer instead of finding the connection closed under them."""

    __slots__ = ("draining",)

    def __init__(self) -> None:
        self.draining = False


async def stop_serving(runners: list[web.ServerRunner], grace: float) -> None:
    """Close every listener, give requests in flight ``grace`` seconds (one deadline for
    all the listeners), cut the rest."""
    await asyncio.gather(*(_stop_one(runner, grace) for runner in runners))


async def _stop_one(runner: web.ServerRunner, grace: float) -> None:
    for site in list(runner.sites):
        await site.stop()
    server = runner.server
    if server is None:
        return
    # Requests accepted just before the listener closed are picked up before idle
    # connections are closed.
    await asyncio.sleep(0)
    server.pre_shutdown()  # idle keep-alive connections close now, busy ones after answering
    try:
        async with asyncio.timeout(grace):
            await server.shutdown(None)
        return
    except TimeoutError:
        pass
    busy = list(server.connections)
    if busy:
        logger.warning(
            "drain: %.1fs grace is over; cutting %d connection(s) in flight", grace, len(busy)
        )
    for connection in busy:
        transport = connection.transport
        if transport is not None:
            # abort, not close: close would first wait to flush to a client not reading.
            transport.abort()
    # The loop reports each aborted connection on its next turn, which cancels its handler;
    # let that start before the rest of the process is torn down under the handlers.
    for _ in range(_UNWIND_TURNS):
        await asyncio.sleep(0)
