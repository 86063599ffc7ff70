"""The README's plugin example, as a third-party author would write it, runs unchanged
against a real router (and imports nothing of the router but ``router.api``)."""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

from aiohttp import ClientSession

from router.testing import Backend, run_router
from tests.support.processes import base_config, run_cli, write_config

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_plugin_module() -> types.ModuleType:
    section = README.read_text().split("\n## Plugins\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the Plugins section has a python example"
    source = code.group(1)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("router"):
            assert node.module == "router.api", node.module
    module = types.ModuleType("readme_tenant")
    exec(compile(source, str(README), "exec"), module.__dict__)
    return module


async def test_the_readme_example_plugin_works(backend: Backend, client: ClientSession) -> None:
    plugin = readme_plugin_module().TenantPlugin
    config = {
        "plugins": [{"name": "tenant"}],
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }
    async with run_router(config, plugins={"tenant": plugin}) as router:
        headers = {"Host": "acme.example.org"}
        async with client.get(router.url + "/", headers=headers) as response:
            assert response.status == 200
            seen = {name.lower(): value for name, value in (await response.json())["headers"]}
        assert seen["x-tenant"] == "acme"
        assert (await router.access_log())[-1]["tenant"] == "acme.example.org"


def test_a_plugins_config_error_is_located_like_the_routers_own(tmp_path: Path) -> None:
    config = base_config(
        tmp_path,
        [],
        plugins=[
            {"name": "tracing", "config": {"exporter": "none"}},
            {"name": "provenance", "config": {"key_file": str(tmp_path / "missing.pem")}},
        ],
    )
    write_config(tmp_path / "router.yaml", config)
    lines = (tmp_path / "router.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "key_file:" in text)
    result = run_cli("serve", "--config", str(tmp_path / "router.yaml"))
    assert result.returncode == 1
    assert (
        f"router.yaml:{line}: plugins[1].config.key_file: cannot read "
        f"{tmp_path / 'missing.pem'}"
    ) in result.stderr
    assert "Traceback" not in result.stderr
