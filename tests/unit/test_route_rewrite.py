"""Path rewrites and redirects of routes: what is sent upstream, what is refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from router.config.models import Route
from router.routing.compiled import replace_prefix


@pytest.mark.parametrize(
    ("path", "prefix", "replacement", "expected"),
    [
        ("/v1/items", "/v1", "/api", "/api/items"),
        ("/v1", "/v1", "/api", "/api"),
        ("/v1/", "/v1", "/api", "/api/"),
        ("/v1/items", "/v1", "", "/items"),  # to "/": stripped
        ("/v1", "/v1", "", "/"),
        ("/items", "", "/api", "/api/items"),  # a "/" route
        ("/V1/items", "/v1", "/api", "/api/items"),  # matched case-insensitively
        ("/other", "/v1", "/api", "/other"),  # matched only once decoded: left alone
    ],
)
def test_replace_prefix(path: str, prefix: str, replacement: str, expected: str) -> None:
    assert replace_prefix(path, prefix, replacement) == expected


BASE: dict[str, Any] = {"name": "r", "path": "/v1", "upstreams": [{"url": "http://a:1"}]}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"path_type": "Exact", "rewrite": {"prefix": "/x"}}, "needs a Prefix route"),
        ({"rewrite": {"prefix": "/x", "full_path": "/y"}}, "exactly one"),
        ({"rewrite": {"full_path": "/a b"}}, "not a plain absolute path"),
        ({"rewrite": {"full_path": "/a?b"}}, "not a plain absolute path"),
        ({"rewrite": {"prefix": "/x"}, "strip_prefix": True}, "not both"),
        ({"upstreams": [], "builtin": "redirect"}, "go together"),
        ({"redirect": {"scheme": "https"}}, "go together"),
        (
            {"upstreams": [], "builtin": "redirect", "redirect": {"hostname": "*.example.org"}},
            "not a wildcard",
        ),
        ({"upstreams": [], "builtin": "redirect", "redirect": {"status_code": 200}}, "301"),
        ({"match": {"method": "get"}}, "pattern"),
        ({"match": {"headers": {"bad name": "x"}}}, "invalid header name"),
    ],
)
def test_invalid_rewrites_redirects_and_conditions(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Route.model_validate({**BASE, **fields})
