"""Read a YAML configuration file into a validated :class:`Config`.

Every problem is collected (not just the first) and reported with its key path and line.
``${NAME}`` and ``${NAME:-default}`` in string values are taken from the environment,
so secrets need not be written into the file.
"""

from __future__ import annotations

import os
import re
import sys
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


def issues_from_validation(
    error: ValidationError, line_map: LineMap, prefix: Location = ()
) -> list[ConfigIssue]:
    issues = []
    for item in error.errors(include_url=False):
        location = prefix + tuple(item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
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
        issues = issues_from_validation(exc, line_map, prefix)
        if model is Config:
            known = {issue.message for issue in issues}
            issues += [i for i in _raw_duplicates(data, line_map) if i.message not in known]
        raise ConfigError(source, issues) from None


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config
    source: str
    line_map: LineMap


def load_config_text(
    text: str, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    data, line_map = parse_yaml(text, source, environ)
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue((), "the configuration must be a YAML mapping", 1)])
    config = validate_model(Config, data, source, line_map)
    return LoadedConfig(config, source, line_map)


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
