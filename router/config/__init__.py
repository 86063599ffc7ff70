"""Configuration: typed models, YAML loading with located errors, JSON Schema export."""

from router.config.loader import (
    ConfigError,
    ConfigIssue,
    LoadedConfig,
    load_config_file,
    load_config_text,
)
from router.config.models import Config, Route

__all__ = [
    "Config",
    "ConfigError",
    "ConfigIssue",
    "LoadedConfig",
    "Route",
    "load_config_file",
    "load_config_text",
]
