from __future__ import annotations

import pytest

from router.routing.paths import PathError, normalize_target, remove_dot_segments


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
