from __future__ import annotations

import pytest

from router.routing.paths import (
    DOUBLE_ENCODED,
    ENCODED_DELIMITER,
    PathError,
    normalize_target,
    remove_dot_segments,
)


def norm(target: str, merge: bool = True) -> tuple[str, str, str]:
    result = normalize_target(target, merge_slashes=merge, reject_encoded_slash=True)
    return result.path, result.match_path, result.query


@pytest.mark.parametrize(
    ("target", "path", "match_path", "query"),
    [
        ("/", "/", "/", ""),
        ("/a/b?x=1", "/a/b", "/a/b", "x=1"),
        ("/admin?x=/public", "/admin", "/admin", "x=/public"),
        ("/admin#frag", "/admin", "/admin", ""),
        ("//admin", "/admin", "/admin", ""),
        ("/%61dmin", "/admin", "/admin", ""),
        ("/x/../admin", "/admin", "/admin", ""),
        ("/x/./admin/", "/x/admin/", "/x/admin/", ""),
        ("/admin;x", "/admin;x", "/admin", ""),
        ("/public/..;/admin", "/admin", "/admin", ""),
        ("/../../etc", "/etc", "/etc", ""),
        ("/%2e%2e/admin", "/admin", "/admin", ""),
        ("/a%20b", "/a%20b", "/a%20b", ""),
        ("/a%7eb%3f", "/a~b%3F", "/a~b%3F", ""),
        ("/a/..", "/", "/", ""),
    ],
)
def test_normalization(target: str, path: str, match_path: str, query: str) -> None:
    assert norm(target) == (path, match_path, query)


@pytest.mark.parametrize(
    "target", ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%00b", "/a\\b", "/a%zz", "/a%4", "/a b", "*", "x"]
)
def test_rejected(target: str) -> None:
    with pytest.raises(PathError):
        norm(target)


def test_merge_slashes_can_be_turned_off() -> None:
    assert norm("//a//b", merge=False)[0] == "//a//b"


def test_remove_dot_segments_rfc3986_examples() -> None:
    assert remove_dot_segments("/a/b/c/./../../g") == "/a/g"
    assert remove_dot_segments("/mid/content=5/../6") == "/mid/6"


ENCODED_CONTROLS = [f"%{code:02X}" for code in (*range(0x20), 0x7F)]


@pytest.mark.parametrize(
    "encoded", [*ENCODED_CONTROLS, *(e.lower() for e in ENCODED_CONTROLS if e.lower() != e)]
)
def test_encoded_control_characters_are_rejected_anywhere(encoded: str) -> None:
    for target in (f"/admin{encoded}", f"/ad{encoded}min", f"/{encoded}/admin", f"/a/b{encoded}/"):
        with pytest.raises(PathError, match=r"control|NUL"):
            norm(target)


def test_encoded_controls_may_be_allowed() -> None:
    result = normalize_target(
        "/admin%0a", merge_slashes=True, reject_encoded_slash=True, reject_encoded_controls=False
    )
    assert result.path == "/admin%0A"


@pytest.mark.parametrize(
    ("target", "path", "encoded", "decoded"),
    [
        ("/admin%3Bx", "/admin%3Bx", ENCODED_DELIMITER, "/admin"),
        ("/admin%3bx/users", "/admin%3Bx/users", ENCODED_DELIMITER, "/admin/users"),
        ("/admin%3Fx/y", "/admin%3Fx/y", ENCODED_DELIMITER, "/admin"),
        ("/admin%23/../x", "/x", 0, None),
        ("/public/..%3B/admin", "/public/..%3B/admin", ENCODED_DELIMITER, "/admin"),
        ("/%2561dmin", "/%2561dmin", DOUBLE_ENCODED, "/admin"),
        ("/%25%36%31dmin", "/%2561dmin", DOUBLE_ENCODED, "/admin"),
        ("/a/%252e%252e/admin", "/a/%252e%252e/admin", DOUBLE_ENCODED, None),
        ("/a%252Fadmin", "/a%252Fadmin", DOUBLE_ENCODED, None),
        ("/a%250A", "/a%250A", DOUBLE_ENCODED, None),
        ("/admin%253Bx", "/admin%253Bx", DOUBLE_ENCODED, "/admin"),
        ("/100%25", "/100%25", 0, None),
        ("/100%25zz", "/100%25zz", 0, None),
    ],
)
def test_risky_encodings_are_flagged_with_their_decoded_reading(
    target: str, path: str, encoded: int, decoded: str | None
) -> None:
    result = normalize_target(target, merge_slashes=True, reject_encoded_slash=True)
    assert (result.path, result.encoded, result.decoded_match_path) == (path, encoded, decoded)
