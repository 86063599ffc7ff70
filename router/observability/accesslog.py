"""One JSON line per request, written off the event loop.

Requests only append bytes to a list; a timer hands the batch to a writer thread every
50 ms, so a slow disk or a full stdout pipe never blocks the event loop. Both are bounded:
when the writer cannot keep up, lines are dropped and counted (``dropped``) rather than
held in memory; lines the writer failed to write are counted too (``write_errors``).
SIGUSR1 has the writer reopen the file (after logrotate moved it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from typing import IO, Any

import orjson

logger = logging.getLogger("commons_router.accesslog")

FLUSH_INTERVAL = 0.05
MAX_BUFFERED_LINES = 20_000
"""Lines collected between two flushes, at most."""
MAX_QUEUED_BATCHES = 40
"""Batches waiting for the writer thread (two seconds' worth), at most."""
_REOPEN = -1
"""The line count that asks the writer to reopen the file."""


class AccessLog:
    def __init__(
        self,
        path: str,
        *,
        max_buffered_lines: int = MAX_BUFFERED_LINES,
        max_queued_batches: int = MAX_QUEUED_BATCHES,
    ) -> None:
        self._path = path
        self._buffer: list[bytes] = []
        self._queue: queue.SimpleQueue[tuple[bytes, int] | None] = queue.SimpleQueue()
        self._max_lines = max_buffered_lines
        self._max_batches = max_queued_batches
        self._queued = 0
        self._queued_lock = threading.Lock()
        self.dropped = 0
        """Lines not written because the writer fell behind."""
        self.write_errors = 0
        """Lines lost to a failed write (disk full, closed pipe ...)."""
        self.reopened = 0
        self._thread: threading.Thread | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._second = -1
        self._second_text = ""

    def _open(self) -> IO[bytes]:
        if self._path == "-":
            return os.fdopen(os.dup(1), "wb", buffering=0)
        return open(self._path, "ab", buffering=0)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        stream = self._open()
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
        if len(self._buffer) >= self._max_lines:
            self.dropped += 1
            return
        self._buffer.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    def reopen(self) -> None:
        """Have the writer close and reopen the file (SIGUSR1, after log rotation)."""
        self._flush()
        self._queue.put((b"", _REOPEN))

    def _flush_tick(self) -> None:
        self._flush()
        if self._loop is not None:
            self._timer = self._loop.call_later(FLUSH_INTERVAL, self._flush_tick)

    def _flush(self) -> None:
        buffer = self._buffer
        if not buffer:
            return
        lines = len(buffer)
        with self._queued_lock:
            full = self._queued >= self._max_batches
            if not full:
                self._queued += 1
        if full:
            self.dropped += lines
        else:
            self._queue.put((b"".join(buffer), lines))
        buffer.clear()

    def _write_forever(self, stream: IO[bytes]) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                batch, lines = item
                if lines == _REOPEN:
                    stream = self._reopen(stream)
                    continue
                with self._queued_lock:
                    self._queued -= 1
                try:
                    view = memoryview(batch)
                    while view:
                        written = stream.write(view)
                        view = view[written or 0 :]
                except (OSError, ValueError):
                    # Lost log lines beat a dead router: counted, shown in /metrics.
                    self.write_errors += lines
        finally:
            stream.close()

    def _reopen(self, stream: IO[bytes]) -> IO[bytes]:
        if self._path == "-":
            return stream
        try:
            fresh = self._open()
        except OSError as exc:
            logger.warning("cannot reopen the access log %s: %s", self._path, exc)
            return stream  # keep writing where we can; the next SIGUSR1 tries again
        stream.close()
        self.reopened += 1
        return fresh
