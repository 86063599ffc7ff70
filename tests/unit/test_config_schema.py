"""config/schema.json describes every built-in plugin's settings, and every example
configuration is valid against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from router.registry import discover_plugins

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "config" / "schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def errors(config: Any) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(config)]


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "examples").glob("*.yaml")))
def test_every_example_is_valid(path: Path) -> None:
    assert errors(yaml.safe_load(path.read_text())) == []


def test_every_builtin_plugin_has_its_settings_in_the_schema() -> None:
    for name, cls in discover_plugins().items():
        assert cls.config_model.__name__ in SCHEMA["$defs"], name
        if cls.route_config_model is not None:
            assert cls.route_config_model.__name__ in SCHEMA["$defs"], name


def test_plugin_settings_are_checked() -> None:
    good = {
        "plugins": [
            {"name": "tracing", "config": {"exporter": "none"}},
            {"name": "ip_filter", "config": {"deny": ["10.0.0.0/8"]}},
        ],
        "routes": [
            {
                "name": "a",
                "builtin": "echo",
                "plugins": {"ip_filter": {"allow": ["127.0.0.0/8"]}},
            }
        ],
    }
    assert errors(good) == []
    typo = {"plugins": [{"name": "tracing", "config": {"exportr": "none"}}]}
    assert any("exportr" in message for message in errors(typo))
    wrong = {"plugins": [{"name": "ip_filter", "config": {"deny": "10.0.0.0/8"}}]}
    assert errors(wrong)
    route_typo = {
        "routes": [{"name": "a", "builtin": "echo", "plugins": {"ip_filter": {"alow": []}}}]
    }
    assert any("alow" in message for message in errors(route_typo))
    # A third-party plugin's settings are left to it.
    other = {"plugins": [{"name": "acme_waf", "config": {"anything": 1}}]}
    assert errors(other) == []
