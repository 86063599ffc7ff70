from __future__ import annotations

import re

from router.dispatch import new_request_id


def test_request_ids_are_96_random_bits_and_do_not_repeat_across_refills() -> None:
    # More than several refills of the 4 KiB random buffer.
    ids = [new_request_id() for _ in range(5000)]
    assert all(re.fullmatch(r"[0-9a-f]{24}", request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)
