"""The JSON Schema of the configuration file, kept in ``config/schema.json``.

It covers the core settings and the settings of every installed plugin (found through
entry points, as at start-up): a ``plugins[]`` entry whose ``name`` is a known plugin has
its ``config`` described by that plugin's model, and so has ``routes[].plugins.<name>``.
Editors that read JSON Schema (VS Code's YAML extension, IntelliJ) complete and check
``config.yaml`` with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from router.config.models import Config

SCHEMA_ID = "https://commons-router.io/schema/config.json"
_REF = "#/$defs/{model}"


def _installed_plugins() -> Mapping[str, Any]:
    from router.registry import UnloadablePlugin, discover_plugins

    return {
        name: cls
        for name, cls in sorted(discover_plugins().items())
        if not issubclass(cls, UnloadablePlugin)
    }


def config_schema(plugins: Mapping[str, Any] | None = None) -> dict[str, Any]:
    plugins = _installed_plugins() if plugins is None else plugins
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Config, "validation")]
    for cls in plugins.values():
        models.append((cls.config_model, "validation"))
        if cls.route_config_model is not None:
            models.append((cls.route_config_model, "validation"))
    refs, schema = models_json_schema(models, ref_template=_REF)
    defs: dict[str, Any] = schema["$defs"]
    root = defs.pop("Config")

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return dict(refs[(model, "validation")])

    # plugins[]: the config block follows the named plugin's model.
    entry = defs["PluginEntry"]
    # Known names are offered (examples), others stay valid: third-party plugins.
    entry["properties"]["name"]["examples"] = sorted(plugins)
    entry["allOf"] = [
        {
            "if": {"properties": {"name": {"const": name}}, "required": ["name"]},
            "then": {"properties": {"config": ref(cls.config_model)}},
        }
        for name, cls in plugins.items()
    ]
    # routes[].plugins.<name>: the plugin's per-route model.
    route_plugins = defs["Route"]["properties"]["plugins"]
    route_plugins["properties"] = {
        name: ref(cls.route_config_model)
        for name, cls in plugins.items()
        if cls.route_config_model is not None
    }
    route_plugins["additionalProperties"] = {"type": "object"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **root,
        "$defs": defs,
    }


def config_schema_text() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"
