"""Read a YAML configuration file into a validated :class:`Config`.

Every problem is collected (not just the first) and reported with its key path and line.
``${NAME}`` and ``${NAME:-default}`` in string values are taken from the environment,
so secrets need not be written into the file.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from router.config.models import Config, duplicate_names

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Location = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    location: Location
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        key = format_location(self.location)
        return f"{where}: {key}: {self.message}" if key else f"{where}: {self.message}"


class ConfigError(Exception):
    """A configuration that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(issue.render(self.source) for issue in self.issues)


def format_location(location: Location) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


@dataclass(slots=True)
class LineMap:
    """Key path -> line number (1-based) of the YAML node at that path."""

    lines: dict[Location, int] = field(default_factory=dict)

    def find(self, location: Location) -> int | None:
        # Walk up to the nearest ancestor that has a line (e.g. a missing key's parent).
        for end in range(len(location), -1, -1):
            line = self.lines.get(tuple(location[:end]))
            if line is not None:
                return line
        return None


class _Builder:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.line_map = LineMap()
        self.issues: list[ConfigIssue] = []
        self._scalar_loader = yaml.SafeLoader("")

    def build(self, node: yaml.Node, location: Location) -> Any:
        self.line_map.lines[location] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar_loader.construct_object(key_node)
                if not isinstance(key, str | int | float | bool) or key is None:
                    self._issue(location, "mapping keys must be plain strings", key_node)
                    continue
                key_text = str(key)
                if key_text == "<<":
                    self._issue(location, "YAML merge keys ('<<') are not supported", key_node)
                    continue
                if key_text in result:
                    self._issue((*location, key_text), "duplicate key", key_node)
                    continue
                result[key_text] = self.build(value_node, (*location, key_text))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*location, index)) for index, item in enumerate(node.value)]
        value = self._scalar_loader.construct_object(node)
        if isinstance(value, str):
            return self._expand_env(value, location, node)
        return value

    def _expand_env(self, value: str, location: Location, node: yaml.Node) -> str:
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = self.environ.get(name)
            if found is not None:
                return found
            if default is not None:
                return default
            self._issue(location, f"environment variable {name} is not set", node)
            return ""

        return _ENV_RE.sub(replace, value) if "${" in value else value

    def _issue(self, location: Location, message: str, node: yaml.Node) -> None:
        self.issues.append(ConfigIssue(location, message, node.start_mark.line + 1))


def parse_yaml(
    text: str, source: str, environ: Mapping[str, str] | None = None
) -> tuple[Any, LineMap]:
    """YAML text -> plain data and its line map; raises :class:`ConfigError`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise ConfigError(source, [ConfigIssue((), f"invalid YAML: {exc.problem}", line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [ConfigIssue((), f"invalid YAML: {exc}")]) from None
    if node is None:
        return {}, LineMap()
    builder = _Builder(os.environ if environ is None else environ)
    data = builder.build(node, ())
    if builder.issues:
        # Validate anyway so that a missing variable does not hide the file's other
        # problems; a key that already has an issue is not reported twice.
        issues = list(builder.issues)
        if isinstance(data, dict):
            try:
                validate_model(Config, data, source, builder.line_map)
            except ConfigError as exc:
                seen = {issue.location for issue in issues}
                issues += [i for i in exc.issues if i.location not in seen]
        raise ConfigError(source, issues)
    return data, builder.line_map


def _step(annotation: Any, part: str | int) -> Any:
    """The type found at ``part`` inside ``annotation`` (a model, list, dict, optional)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _step(typing.get_args(annotation)[0], part)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _step(options[0], part) if len(options) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field_info = annotation.model_fields.get(str(part))
        return field_info.annotation if field_info is not None else None
    args = typing.get_args(annotation)
    if origin in (list, tuple) and isinstance(part, int) and args:
        return args[0]
    if origin is dict and isinstance(part, str) and len(args) == 2:
        return args[1]
    return None


def _known_keys(model: type[BaseModel], location: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in location:
        current = _step(current, part)
        if current is None:
            return []
    origin = typing.get_origin(current)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(current) if a is not type(None)]
        current = options[0] if len(options) == 1 else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def did_you_mean(key: str, known: list[str]) -> str:
    """`` (did you mean 'x'?)`` when a known key is close to ``key``, else ``""``."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def issues_from_validation(
    error: ValidationError,
    line_map: LineMap,
    prefix: Location = (),
    model: type[BaseModel] | None = None,
) -> list[ConfigIssue]:
    issues = []
    for item in error.errors(include_url=False):
        location = prefix + tuple(item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
            if model is not None and item["loc"]:
                known = _known_keys(model, tuple(item["loc"][:-1]))
                message += did_you_mean(str(item["loc"][-1]), known)
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        issues.append(ConfigIssue(location, message, line_map.find(location)))
    return issues


def _raw_duplicates(data: Any, line_map: LineMap) -> list[ConfigIssue]:
    # Pydantic skips list-level validators when an item is invalid; duplicates are still
    # worth reporting alongside the item errors.
    issues = []
    for field_name in ("routes", "plugins"):
        entries = data.get(field_name) if isinstance(data, dict) else None
        if not isinstance(entries, list):
            continue
        names = [e["name"] for e in entries if isinstance(e, dict) and "name" in e]
        problem = duplicate_names(field_name, names)
        if problem:
            issues.append(ConfigIssue((field_name,), problem, line_map.find((field_name,))))
    return issues


def validate_model(
    model: type[M], data: Any, source: str, line_map: LineMap, prefix: Location = ()
) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = issues_from_validation(exc, line_map, prefix, model)
        if model is Config:
            known = {issue.message for issue in issues}
            issues += [i for i in _raw_duplicates(data, line_map) if i.message not in known]
        raise ConfigError(source, issues) from None


ENV_PREFIX = "COMMONS_ROUTER_"
"""``COMMONS_ROUTER_LOG__LEVEL=debug`` sets ``log.level``: ``__`` separates nested keys,
numbers index lists (``COMMONS_ROUTER_ROUTES__0__RETRIES=2``); values are read as YAML
(``true``, ``5``, ``["10.0.0.0/8"]``, ``'"quoted string"'``)."""


def environment_overrides(
    data: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[Location, str], list[ConfigIssue]]:
    """Apply every ``COMMONS_ROUTER_<KEY>`` variable whose first part is a top-level key
    (others, such as ``COMMONS_ROUTER_BUILD_COMMIT``, are not settings). The environment
    wins over the file. Returns where each variable applied, and the problems."""
    applied: dict[Location, str] = {}
    issues: list[ConfigIssue] = []
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if parts[0] not in Config.model_fields or not all(parts):
            continue
        location: Location = tuple(int(p) if p.isdigit() else p for p in parts)
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        problem = _set_at(data, location, value)
        if problem is not None:
            issues.append(ConfigIssue(location, f"{problem} (from {name})"))
            continue
        applied[location] = name
    return applied, issues


def _set_at(data: Any, location: Location, value: Any) -> str | None:
    current = data
    for depth, part in enumerate(location):
        last = depth == len(location) - 1
        if isinstance(part, int):
            if not isinstance(current, list) or not 0 <= part < len(current):
                return f"no list entry [{part}] to set"
            if last:
                current[part] = value
                return None
            current = current[part]
            continue
        if not isinstance(current, dict):
            return f"cannot set {part!r}: not a mapping"
        if last:
            current[part] = value
            return None
        current = current.setdefault(part, {})
    return None


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config
    source: str
    line_map: LineMap


def load_config_text(
    text: str, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    data, line_map = parse_yaml(text, source, environ)
    if data == {} and not text.strip().startswith("{"):
        raise ConfigError(
            source,
            [ConfigIssue((), "the file is empty: a configuration needs at least a route", 1)],
        )
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue((), "the configuration must be a YAML mapping", 1)])
    applied, env_issues = environment_overrides(data, os.environ if environ is None else environ)
    try:
        config = validate_model(Config, data, source, line_map)
    except ConfigError as exc:
        issues = [_from_environment(issue, applied) for issue in exc.issues]
        raise ConfigError(source, env_issues + issues) from None
    if env_issues:
        raise ConfigError(source, env_issues)
    return LoadedConfig(config, source, line_map)


def _from_environment(issue: ConfigIssue, applied: dict[Location, str]) -> ConfigIssue:
    for location, name in applied.items():
        if issue.location[: len(location)] == location:
            return ConfigIssue(issue.location, f"{issue.message} (from {name})")
    return issue


def load_config_file(path: str | Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [ConfigIssue((), "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [ConfigIssue((), f"cannot read file: {exc}")]) from None
    return load_config_text(text, source, environ)


def render_config_error(exc: ConfigError) -> str:
    """Every issue, one per line, in file order (issues without a line first)."""
    issues = sorted(exc.issues, key=lambda issue: issue.line or 0)
    return "\n".join(issue.render(exc.source) for issue in issues)


def report_invalid_config(exc: ConfigError) -> None:
    print(f"commons-router: invalid configuration:\n{render_config_error(exc)}", file=sys.stderr)
