"""The core never imports a plugin module; plugins come through entry points only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_does_not_import_plugins() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if "plugin" in m)
        for path in (ROOT / "router").rglob("*.py")
    }
    offenders = {
        path: [m for m in modules if m.split(".")[0] == "router_plugins"]
        for path, modules in offenders.items()
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_no_bare_top_level_plugins_package() -> None:
    assert not (ROOT / "plugins" / "__init__.py").exists()
    assert (ROOT / "plugins" / "router_plugins" / "__init__.py").exists()
