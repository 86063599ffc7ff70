"""Plugin discovery (entry points), ordering and config validation.

Built-in and third-party plugins are found the same way: the ``commons_router.plugins``
entry-point group. The core never imports a plugin module by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from router.api.errors import PluginConfigError
from router.api.plugin import Plugin, PluginServices
from router.config.loader import ConfigError, ConfigIssue, LineMap, issues_from_validation
from router.config.models import Config, Route

ENTRY_POINT_GROUP = "commons_router.plugins"

PluginClass = type[Plugin[Any]]


class UnloadablePlugin(Plugin[Any]):
    """Stands for an installed plugin whose entry point cannot be loaded.

    A broken plugin that the configuration does not use must not stop the router; one that
    it uses is reported as a configuration error naming the cause.
    """

    load_error: ClassVar[str] = ""


def _unloadable(name: str, error: str) -> PluginClass:
    return type(f"Unloadable_{name}", (UnloadablePlugin,), {"name": name, "load_error": error})


def discover_plugins() -> dict[str, PluginClass]:
    """Every installed plugin class, by name."""
    found: dict[str, PluginClass] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as exc:
            found[entry.name] = _unloadable(entry.name, f"{type(exc).__name__}: {exc}")
            continue
        if isinstance(loaded, type) and issubclass(loaded, Plugin):
            found[entry.name] = loaded
        else:
            found[entry.name] = _unloadable(
                entry.name, f"{entry.value} is not a commons-router Plugin class"
            )
    return found


@dataclass(frozen=True, slots=True)
class PluginSpec:
    """A plugin enabled in the config, with its validated settings, in config order."""

    name: str
    cls: PluginClass
    config: BaseModel
    index: int = 0
    """Position in ``plugins:`` (for locating its configuration errors)."""


def resolve_plugins(
    config: Config, available: Mapping[str, PluginClass], line_map: LineMap | None = None
) -> tuple[list[PluginSpec], list[ConfigIssue]]:
    line_map = line_map or LineMap()
    specs: list[PluginSpec] = []
    issues: list[ConfigIssue] = []
    for index, entry in enumerate(config.plugins):
        location: tuple[str | int, ...] = ("plugins", index, "name")
        cls = available.get(entry.name)
        if cls is None:
            installed = ", ".join(sorted(available)) or "none"
            issues.append(
                ConfigIssue(
                    location,
                    f"unknown plugin {entry.name!r} (installed: {installed})",
                    line_map.find(location),
                )
            )
            continue
        if issubclass(cls, UnloadablePlugin):
            issues.append(
                ConfigIssue(
                    location,
                    f"plugin {entry.name!r} is installed but cannot be loaded ({cls.load_error})",
                    line_map.find(location),
                )
            )
            continue
        try:
            plugin_config = cls.config_model.model_validate(entry.config)
        except ValidationError as exc:
            issues.extend(
                issues_from_validation(
                    exc, line_map, ("plugins", index, "config"), cls.config_model
                )
            )
            continue
        specs.append(PluginSpec(entry.name, cls, plugin_config, index))
    return specs, issues


async def start_plugin(
    spec: PluginSpec, services: PluginServices, source: str, line_map: LineMap
) -> Plugin[Any]:
    """Make and start the plugin; its :class:`PluginConfigError` becomes a located
    :class:`ConfigError` (``file:line: plugins[i].config.key: message``)."""
    try:
        plugin = spec.cls(spec.config, services)
        await plugin.start()
    except PluginConfigError as exc:
        location = ("plugins", spec.index, "config", *exc.where)
        issue = ConfigIssue(location, exc.message, line_map.find(location))
        raise ConfigError(source, [issue]) from None
    return plugin


def route_plugin_configs(
    route: Route,
    plugins: Sequence[PluginSpec],
    location: tuple[str | int, ...],
    line_map: LineMap | None = None,
) -> tuple[dict[str, BaseModel], list[ConfigIssue]]:
    """Validate ``route.plugins``: each block must name an enabled plugin that takes one."""
    line_map = line_map or LineMap()
    enabled = {spec.name: spec for spec in plugins}
    configs: dict[str, BaseModel] = {}
    issues: list[ConfigIssue] = []
    for name, raw in route.plugins.items():
        where = (*location, "plugins", name)
        spec = enabled.get(name)
        if spec is None:
            issues.append(
                ConfigIssue(
                    where, f"plugin {name!r} is not enabled in 'plugins'", line_map.find(where)
                )
            )
            continue
        model = spec.cls.route_config_model
        if model is None:
            issues.append(
                ConfigIssue(
                    where, f"plugin {name!r} takes no per-route settings", line_map.find(where)
                )
            )
            continue
        try:
            configs[name] = model.model_validate(raw)
        except ValidationError as exc:
            issues.extend(issues_from_validation(exc, line_map, where, model))
    return configs, issues


def validate_all(
    config: Config, available: Mapping[str, PluginClass], line_map: LineMap | None = None
) -> list[ConfigIssue]:
    """Every plugin problem in a config (the models themselves are already valid)."""
    specs, issues = resolve_plugins(config, available, line_map)
    # Route blocks of a listed plugin that failed to load would only repeat its problem.
    failed = {entry.name for entry in config.plugins} - {spec.name for spec in specs}
    for index, route in enumerate(config.routes):
        if failed & route.plugins.keys():
            route = route.model_copy(
                update={"plugins": {k: v for k, v in route.plugins.items() if k not in failed}}
            )
        issues.extend(route_plugin_configs(route, specs, ("routes", index), line_map)[1])
    return issues
