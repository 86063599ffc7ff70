"""The JSON Schema of the configuration file, kept in ``config/schema.json``."""

from __future__ import annotations

import json
from typing import Any

from router.config.models import Config

SCHEMA_ID = "https://commons-router.io/schema/config.json"


def config_schema() -> dict[str, Any]:
    schema = Config.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def config_schema_text() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"
