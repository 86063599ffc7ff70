"""Run one coroutine per key at a time; concurrent callers for the same key share its result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def single_flight(
    running: dict[str, asyncio.Future[T]], key: str, work: Callable[[], Awaitable[T]]
) -> T:
    """``await work()``, unless a call for ``key`` is under way: then share its outcome.

    If the caller doing the work is cancelled (its client went away), the others do not
    inherit the cancellation: the next one does the work itself.
    """
    while (shared := running.get(key)) is not None:
        try:
            return await asyncio.shield(shared)
        except asyncio.CancelledError:
            if not shared.cancelled():
                raise  # this caller was cancelled, not the one doing the work
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    # The outcome may have no other reader: mark exceptions as retrieved.
    future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
    running[key] = future
    try:
        result = await work()
    except asyncio.CancelledError:
        future.cancel()
        raise
    except BaseException as exc:
        future.set_exception(exc)
        raise
    else:
        future.set_result(result)
        return result
    finally:
        del running[key]
