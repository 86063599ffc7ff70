"""One JSON line per request, written off the event loop.

Requests only append bytes to a list; a timer hands the batch to a writer thread every
50 ms, so a slow disk or a full stdout pipe never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from typing import IO, Any

import orjson

FLUSH_INTERVAL = 0.05


class AccessLog:
    def __init__(self, path: str) -> None:
        self._path = path
        self._buffer: list[bytes] = []
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._second = -1
        self._second_text = ""

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        stream: IO[bytes]
        if self._path == "-":
            stream = os.fdopen(os.dup(1), "wb", buffering=0)
        else:
            stream = open(self._path, "ab", buffering=0)  # noqa: SIM115 - closed by the writer
        self._thread = threading.Thread(
            target=self._write_forever, args=(stream,), name="access-log", daemon=True
        )
        self._thread.start()
        self._timer = self._loop.call_later(FLUSH_INTERVAL, self._flush_tick)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()
        self._queue.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
            self._thread = None

    def timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((now - second) * 1000):03d}Z"

    def write(self, record: dict[str, Any]) -> None:
        self._buffer.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    def _flush_tick(self) -> None:
        self._flush()
        if self._loop is not None:
            self._timer = self._loop.call_later(FLUSH_INTERVAL, self._flush_tick)

    def _flush(self) -> None:
        if self._buffer:
            batch = b"".join(self._buffer)
            self._buffer.clear()
            self._queue.put(batch)

    def _write_forever(self, stream: IO[bytes]) -> None:
        with stream:
            while True:
                batch = self._queue.get()
                if batch is None:
                    return
                try:
                    view = memoryview(batch)
                    while view:
                        written = stream.write(view)
                        view = view[written or 0 :]
                except OSError:
                    # Lost log lines beat a dead router; the error is counted by the caller's
                    # monitoring of the log pipe.
                    continue
