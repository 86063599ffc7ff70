from __future__ import annotations

import os
import re

import pytest

from router import randomness
from router.dispatch import new_request_id


def test_request_ids_are_96_random_bits_and_do_not_repeat_across_refills() -> None:
    # More than several refills of the 4 KiB random buffer.
    ids = [new_request_id() for _ in range(5000)]
    assert all(re.fullmatch(r"[0-9a-f]{24}", request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)


def test_random_hex_hands_out_each_fetched_byte_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The OS generator is replaced by numbered blocks, so which bytes each id got is known.
    fetched: list[int] = []

    def urandom(size: int) -> bytes:
        fetched.append(size)
        return bytes([len(fetched)]) * size

    monkeypatch.setattr(randomness.os, "urandom", urandom)
    pool = randomness.RandomHex()
    assert pool.take(24) == "01" * 24
    assert pool.take(4000) == "01" * 4000
    assert pool.take(100) == "02" * 100  # 72 bytes were left: a new block, none reused
    assert pool.take(5000) == "03" * 5000  # larger than a block: fetched whole
    assert pool.take(1) == "04"
    assert fetched == [4096, 4096, 5000, 4096]


def test_a_forked_child_does_not_reuse_its_parents_bytes() -> None:
    randomness.RANDOM_HEX.take(1)  # the parent has a buffer now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, randomness.RANDOM_HEX.take(16).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 32
    assert child != randomness.RANDOM_HEX.take(16)
