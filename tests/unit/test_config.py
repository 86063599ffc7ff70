from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from router.app import check_config
from router.config.loader import ConfigError, load_config_file, load_config_text
from router.config.models import Config
from router.config.schema import config_schema
from router.config.types import parse_duration, parse_size

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "examples").glob("*.yaml")))
def test_example_configs_load_and_pass_check(path: Path) -> None:
    loaded = load_config_file(path)
    check_config(loaded)
    assert loaded.config.routes


def test_schema_file_matches_models() -> None:
    committed = json.loads((ROOT / "config" / "schema.json").read_text())
    assert committed == config_schema(), (
        "config/schema.json is stale: run `python -m router.config schema > config/schema.json`"
    )


def test_every_error_is_reported_with_key_path_and_line() -> None:
    text = """\
listener:
  listen: nowhere
workers: 0
routes:
  - name: ok
    upstreams: [{url: "http://127.0.0.1:1"}]
  - name: bad route
    path: relative
    upstreams: [{url: "ftp://x"}]
    colour: blue
"""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "test.yaml")
    rendered = caught.value.render()
    issues = {
        (".".join(str(p) for p in i.location), i.line): i.message for i in caught.value.issues
    }
    assert ("listener.listen", 2) in issues
    assert ("workers", 3) in issues
    assert ("routes.1.name", 7) in issues
    assert ("routes.1.path", 8) in issues
    assert ("routes.1.upstreams.0.url", 9) in issues
    assert issues[("routes.1.colour", 10)] == "unknown key"
    assert "test.yaml:10: routes[1].colour: unknown key" in rendered
    assert len(caught.value.issues) == 6


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("routes:\n  - name: a\n   bad: [\n", "x.yaml")
    assert caught.value.issues[0].line is not None
    assert "invalid YAML" in caught.value.issues[0].message


def test_duplicate_keys_are_errors_not_silently_overwritten() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("workers: 1\nworkers: 2\n", "x.yaml")
    assert caught.value.issues[0].message == "duplicate key"
    assert caught.value.issues[0].line == 2


def test_environment_variables_fill_secrets() -> None:
    text = 'routes:\n  - name: a\n    upstreams: [{url: "${UPSTREAM}"}]\n'
    loaded = load_config_text(text, environ={"UPSTREAM": "http://10.0.0.1:80"})
    assert loaded.config.routes[0].upstreams[0].url == "http://10.0.0.1:80"
    defaulted = load_config_text(
        'routes:\n  - name: a\n    upstreams: [{url: "${UPSTREAM:-http://h:1}"}]\n', environ={}
    )
    assert defaulted.config.routes[0].upstreams[0].url == "http://h:1"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "x.yaml", environ={})
    assert caught.value.issues[0].message == "environment variable UPSTREAM is not set"
    assert caught.value.issues[0].line == 3


def test_route_needs_exactly_one_target_and_unique_names() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(
            "routes:\n  - name: a\n  - name: b\n    builtin: echo\n  - name: b\n    builtin: echo\n"
        )
    messages = [i.message for i in caught.value.issues]
    assert any("either 'upstreams' or 'builtin'" in m for m in messages)
    assert any("duplicate route name: 'b'" in m for m in messages)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("app.example.com", True),
        ("*.example.com", True),
        ("APP.Example.com.", True),
        ("a.*.example.com", False),
        ("exa mple.com", False),
        ("-bad.example.com", False),
        ("example.com:8080", False),
    ],
)
def test_host_patterns(host: str, ok: bool) -> None:
    text = f'routes:\n  - name: a\n    hosts: ["{host}"]\n    builtin: echo\n'
    if ok:
        assert load_config_text(text).config.routes[0].hosts[0] == host.lower().rstrip(".")
    else:
        with pytest.raises(ConfigError):
            load_config_text(text)


def test_plugin_problems_are_located() -> None:
    text = """\
plugins:
  - name: ip_filter
    config: {deny: [not-a-cidr]}
routes:
  - name: a
    builtin: echo
"""
    with pytest.raises(ConfigError) as caught:
        check_config(load_config_text(text, "p.yaml"))
    issue = caught.value.issues[0]
    assert issue.location[:3] == ("plugins", 0, "config")
    assert issue.line == 3

    unknown = "plugins:\n  - name: nope\nroutes:\n  - name: a\n    builtin: echo\n"
    with pytest.raises(ConfigError) as caught:
        check_config(load_config_text(unknown, "p.yaml"))
    assert "unknown plugin 'nope'" in caught.value.issues[0].message
    assert caught.value.issues[0].line == 2

    not_enabled = "routes:\n  - name: a\n    builtin: echo\n    plugins: {ip_filter: {}}\n"
    with pytest.raises(ConfigError) as caught:
        check_config(load_config_text(not_enabled, "p.yaml"))
    assert "not enabled" in caught.value.issues[0].message
    assert caught.value.issues[0].line == 4


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), (3, 3.0), ("1.5", 1.5)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("10MiB", 10 * 1024**2), ("1GB", 10**9), (512, 512), ("4K", 4096)]
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["5 parsecs", "-1s", True, [1]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        names.add(name)
        for candidate in (*typing.get_args(field.annotation), field.annotation):
            inner = typing.get_args(candidate) or (candidate,)
            for item in inner:
                if isinstance(item, type) and issubclass(item, BaseModel):
                    names |= _field_names(item)
    return names


def test_readme_documents_every_config_key() -> None:
    readme = (ROOT / "README.md").read_text()
    code_spans = " ".join(re.findall(r"`([^`\n]+)`", readme.replace("```", "\n")))
    missing = sorted(
        name for name in _field_names(Config) if not re.search(rf"\b{name}\b", code_spans)
    )
    assert missing == []


def test_several_workers_need_a_fixed_port() -> None:
    with pytest.raises(ConfigError, match="fixed listener port"):
        load_config_text("workers: 2\nlistener: {listen: '127.0.0.1:0'}\n")
