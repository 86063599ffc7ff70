"""Random hex strings from the operating system's generator, for ids made per request.

The bytes are fetched 4 KiB at a time: one system call per few hundred ids instead of one
per id, and no formatting of large integers (``bytes.hex`` is a tight C loop, formatting a
128-bit ``int`` as hex is not).
"""

from __future__ import annotations

import os

_REFILL = 4096


class RandomHex:
    __slots__ = ("_offset", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._offset = 0

    def take(self, nbytes: int) -> str:
        """``nbytes`` fresh random bytes as ``2 * nbytes`` lowercase hex digits."""
        start = self._offset
        end = start + nbytes
        if end > len(self._pool):
            self._pool = os.urandom(max(_REFILL, nbytes))
            start, end = 0, nbytes
        self._offset = end
        return self._pool[start:end].hex()

    def forget(self) -> None:
        """Drop the buffered bytes (a forked child must not hand out its parent's)."""
        self._pool = b""
        self._offset = 0


RANDOM_HEX = RandomHex()
"""The process's pool (request ids, trace and span ids)."""

os.register_at_fork(after_in_child=RANDOM_HEX.forget)
