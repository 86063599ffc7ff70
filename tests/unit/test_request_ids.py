from __future__ import annotations

import os
import re

from router.dispatch import new_request_id
from router.randomness import RandomHex


def test_request_ids_are_96_random_bits_and_do_not_repeat_across_refills() -> None:
    # More than several refills of the 4 KiB random buffer.
    ids = [new_request_id() for _ in range(5000)]
    assert all(re.fullmatch(r"[0-9a-f]{24}", request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)


def test_random_hex_gives_fresh_bytes_of_any_size() -> None:
    pool = RandomHex()
    sizes = [24, 12, 4096, 5000, 1, 24]
    values = [pool.take(size) for size in sizes]
    assert [len(value) for value in values] == [2 * size for size in sizes]
    assert all(re.fullmatch(r"[0-9a-f]+", value) for value in values)
    # Bytes are handed out once: no value repeats a part of another.
    halves = [value[: len(value) // 2] for value in values if len(value) >= 24]
    assert len(set(halves)) == len(halves)


def test_a_forked_child_does_not_reuse_its_parents_bytes() -> None:
    from router.randomness import RANDOM_HEX

    RANDOM_HEX.take(1)  # the parent has a buffer now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, RANDOM_HEX.take(16).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 32
    assert child != RANDOM_HEX.take(16)
