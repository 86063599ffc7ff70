"""Plugin discovery through real entry points, including broken ones."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.cli import dev_config
from router.config.loader import load_config_text
from router.registry import UnloadablePlugin, discover_plugins, resolve_plugins


@pytest.fixture
def broken_distribution(tmp_path: Path) -> Iterator[None]:
    """An installed distribution whose plugin entry points cannot be loaded."""
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[commons_router.plugins]\n"
        "missing = no_such_module_anywhere:Plugin\n"
        "not_a_plugin = json:dumps\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))


def test_broken_plugins_do_not_stop_discovery(broken_distribution: None) -> None:
    found = discover_plugins()
    assert "ip_filter" in found and not issubclass(found["ip_filter"], UnloadablePlugin)
    assert issubclass(found["missing"], UnloadablePlugin)
    assert issubclass(found["not_a_plugin"], UnloadablePlugin)


def test_using_a_broken_plugin_is_a_located_config_error(broken_distribution: None) -> None:
    loaded = load_config_text(
        "plugins:\n  - name: ip_filter\n  - name: missing\n  - name: not_a_plugin\n", "x.yaml"
    )
    specs, issues = resolve_plugins(loaded.config, discover_plugins(), loaded.line_map)
    assert [spec.name for spec in specs] == ["ip_filter"]
    assert [(issue.line, issue.location) for issue in issues] == [
        (3, ("plugins", 1, "name")),
        (4, ("plugins", 2, "name")),
    ]
    assert "cannot be loaded (ModuleNotFoundError" in issues[0].message
    assert "json:dumps is not a commons-router Plugin class" in issues[1].message


THIRD_PARTY = '''
from router.api import DevOptions, DevPreset, Plugin


class Banner(Plugin):
    name = "banner"

    @classmethod
    def dev_preset(cls, options: DevOptions) -> DevPreset:
        return DevPreset(order=15)


class Lonely(Plugin):
    name = "lonely"

    @classmethod
    def dev_preset(cls, options: DevOptions) -> DevPreset:
        return DevPreset(order=50, requires=("not_installed",))
'''


@pytest.fixture
def third_party_distribution(tmp_path: Path) -> Iterator[None]:
    """An installed third-party plugin that takes part in ``commons-router dev``."""
    (tmp_path / "banner_plugin.py").write_text(THIRD_PARTY)
    dist = tmp_path / "banner_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: banner-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[commons_router.plugins]\nbanner = banner_plugin:Banner\nlonely = banner_plugin:Lonely\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("banner_plugin", None)


def test_dev_takes_each_installed_plugins_preset_in_its_order(
    third_party_distribution: None,
) -> None:
    loopback = dev_config("http://127.0.0.1:3000", "127.0.0.1:8080", "127.0.0.1:9901", "/src")
    assert [p.name for p in loopback.plugins] == [
        "tracing",
        "banner",
        "provenance",
        "sessions",
        "auth",
    ]
    provenance = next(p for p in loopback.plugins if p.name == "provenance")
    assert provenance.config == {"source_dir": "/src"}
    public = dev_config(None, "0.0.0.0:8080", "127.0.0.1:9901")
    assert [p.name for p in public.plugins] == ["tracing", "banner", "provenance"]
