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


def core_modules() -> dict[str, Path]:
    modules = {}
    for path in (ROOT / "router").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only)."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if (
                isinstance(child, ast.If)
                and isinstance(child.test, ast.Name)
                and child.test.id == "TYPE_CHECKING"
            ):
                pending.extend(child.orelse)
                continue
            pending.append(child)
    return nodes


def core_import_graph() -> dict[str, set[str]]:
    """Module -> the core modules it imports when it runs (at module level or inside
    functions; imports for type annotations only are left out)."""
    modules = core_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            targets.update(c for c in candidates if c in modules and c != name)
        graph[name] = targets
    return graph


COMPOSITION = frozenset(
    {
        "router.__main__",
        "router.admin",
        "router.app",
        "router.cli",
        "router.dispatch",
        "router.inspect",
        "router.server",
        "router.testing",
        "router.workers",
    }
)
"""The modules that put the router together; nothing below them may import them."""


def test_core_imports_have_no_circles() -> None:
    graph = core_import_graph()
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_no_upward_imports_into_the_composition_layer() -> None:
    upward = {
        (module, target)
        for module, targets in core_import_graph().items()
        if module not in COMPOSITION
        for target in targets
        if target in COMPOSITION
    }
    assert upward == set()


def plugin_imports() -> dict[str, set[str]]:
    """Plugin module -> every module it imports (runtime and annotation-only alike)."""
    found = {}
    for path in (ROOT / "plugins" / "router_plugins").rglob("*.py"):
        found[str(path.relative_to(ROOT))] = imported_modules(path)
    return found


def test_plugins_import_only_the_plugin_api_from_the_core() -> None:
    offenders = {
        path: sorted(m for m in modules if m.split(".")[0] == "router" and m != "router.api")
        for path, modules in plugin_imports().items()
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_plugins_reach_other_plugins_only_through_their_package() -> None:
    """A plugin may use another's public names (``router_plugins.sessions``) and the shared
    contracts, never the other's modules (``router_plugins.sessions.model``)."""
    offenders = {}
    for path, modules in plugin_imports().items():
        own = path.split("/")[2].removesuffix(".py")
        bad = [
            module
            for module in modules
            if module.startswith("router_plugins.")
            and module.split(".")[1] not in (own, "contracts")
            and module.count(".") > 1
        ]
        if bad:
            offenders[path] = bad
    assert offenders == {}


def test_every_plugin_package_has_the_same_shape() -> None:
    for package in sorted((ROOT / "plugins" / "router_plugins").iterdir()):
        if not package.is_dir() or package.name.startswith("__"):
            continue
        files = {p.name for p in package.glob("*.py")}
        assert {"__init__.py", "plugin.py", "settings.py"} <= files, package.name
        text = (package / "plugin.py").read_text()
        assert "(Plugin[" in text, f"{package.name}: the plugin class lives in plugin.py"
