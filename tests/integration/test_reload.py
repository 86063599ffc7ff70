"""Route reloads of a real ``commons-router serve`` process: SIGHUP and file changes."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import ClientSession

from router.testing import Backend
from tests.support.processes import (
    RouterProcess,
    base_config,
    eventually,
    get,
    started,
    write_config,
)


class Setup:
    def __init__(self, tmp_path: Path, backend: Backend, **overrides: Any) -> None:
        self.path = tmp_path / "router.yaml"
        self.config = base_config(tmp_path, [self.route("app", "/app", backend)], **overrides)
        self.public = f"http://{self.config['listener']['listen']}"
        self.admin = f"http://{self.config['admin']['listen']}"
        self.backend = backend
        write_config(self.path, self.config)

    @staticmethod
    def route(name: str, path: str, backend: Backend) -> dict[str, Any]:
        return {"name": name, "path": path, "upstreams": [{"url": backend.url}]}

    def rewrite(self, routes: list[dict[str, Any]], **overrides: Any) -> None:
        write_config(self.path, {**self.config, **overrides, "routes": routes})


async def route_names(client: ClientSession, admin: str) -> set[str]:
    status, body, _ = await get(client, admin + "/routes")
    assert status == 200
    return {route["name"] for route in orjson.loads(body)["routes"]}


async def metric(client: ClientSession, admin: str, series: str) -> float | None:
    _, text, _ = await get(client, admin + "/metrics")
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def routed_to(client: ClientSession, url: str) -> str | None:
    """The route that answered ``url`` (the backend echoes the path; 404 is no route)."""
    status, body, _ = await get(client, url)
    if status != 200:
        return None
    return str(orjson.loads(body)["path"])


FAILED = 'commons_router_config_reloads_total{result="failed"}'
OK = 'commons_router_config_reloads_total{result="ok"}'


async def test_sighup_applies_a_new_route(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    setup = Setup(tmp_path, backend)
    with started(["serve", "--config", str(setup.path)], tmp_path) as router:
        await router.wait_ready(client, setup.admin)
        assert await route_names(client, setup.admin) == {"app"}
        assert (await get(client, setup.public + "/new/x"))[0] == 404

        setup.rewrite([setup.route("app", "/app", backend), setup.route("new", "/new", backend)])
        router.send(signal.SIGHUP)

        async def new_route_serves() -> bool:
            return await routed_to(client, setup.public + "/new/x") == "/new/x"

        await eventually(new_route_serves, message="the new route serving")
        assert await route_names(client, setup.admin) == {"app", "new"}
        assert await metric(client, setup.admin, OK) == 1
        assert await metric(client, setup.admin, FAILED) == 0
        assert router.popen.poll() is None


async def test_bad_reload_keeps_the_old_routes(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    setup = Setup(tmp_path, backend)
    with started(["serve", "--config", str(setup.path)], tmp_path) as router:
        await router.wait_ready(client, setup.admin)
        generation = await metric(client, setup.admin, "commons_router_route_table_generation")

        setup.path.write_text(
            "routes:\n"
            "  - name: app\n"
            "    path: /app\n"
            "    upstreams: [{url: 'ftp://nowhere'}]\n"
            "    surprise: 1\n",
            encoding="utf-8",
        )
        router.send(signal.SIGHUP)
        await eventually(
            lambda: _equals(metric(client, setup.admin, FAILED), 1), message="failed reload counted"
        )
        assert await routed_to(client, setup.public + "/app/still") == "/app/still"
        assert await route_names(client, setup.admin) == {"app"}
        assert await metric(client, setup.admin, OK) == 0
        assert (
            await metric(client, setup.admin, "commons_router_route_table_generation") == generation
        )
        stderr = router.stderr()
        assert "reload failed" in stderr
        assert f"{setup.path}:4: routes[0].upstreams[0].url: invalid upstream" in stderr
        assert f"{setup.path}:5: routes[0].surprise: unknown key" in stderr
        assert "Traceback" not in stderr

        # Invalid YAML and a missing file are failed reloads too; the process lives on.
        setup.path.write_text("routes: [\n", encoding="utf-8")
        router.send(signal.SIGHUP)
        await eventually(
            lambda: _equals(metric(client, setup.admin, FAILED), 2), message="second failure"
        )
        setup.path.unlink()
        router.send(signal.SIGHUP)
        await eventually(
            lambda: _equals(metric(client, setup.admin, FAILED), 3), message="third failure"
        )
        assert "invalid YAML" in router.stderr()
        assert f"{setup.path}: file not found" in router.stderr()
        assert await routed_to(client, setup.public + "/app/still") == "/app/still"

        # A good file again: applied.
        setup.rewrite([setup.route("app", "/app", backend), setup.route("back", "/back", backend)])
        router.send(signal.SIGHUP)
        await eventually(
            lambda: _equals(routed_to(client, setup.public + "/back/1"), "/back/1"),
            message="recovered",
        )
        assert router.popen.poll() is None


async def test_reload_rejects_route_block_of_a_plugin_not_enabled(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    setup = Setup(tmp_path, backend)
    with started(["serve", "--config", str(setup.path)], tmp_path) as router:
        await router.wait_ready(client, setup.admin)
        route = {**setup.route("app", "/app", backend), "plugins": {"ip_filter": {"deny": []}}}
        setup.rewrite([route])
        router.send(signal.SIGHUP)
        await eventually(
            lambda: _equals(metric(client, setup.admin, FAILED), 1), message="failed reload"
        )
        assert "routes[0].plugins.ip_filter: plugin 'ip_filter' is not enabled" in (router.stderr())


async def test_reload_warns_about_settings_that_need_a_restart(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    setup = Setup(tmp_path, backend)
    with started(["serve", "--config", str(setup.path)], tmp_path) as router:
        await router.wait_ready(client, setup.admin)
        setup.rewrite(
            [setup.route("app", "/app", backend), setup.route("more", "/more", backend)],
            trusted_proxies=["10.0.0.0/8"],
            drain={"delay": 0, "grace": 3},
        )
        router.send(signal.SIGHUP)
        await eventually(
            lambda: _equals(routed_to(client, setup.public + "/more/1"), "/more/1"),
            message="routes applied",
        )
        warning = _warning_lines(router)
        assert any("trusted_proxies" in line and "drain" in line for line in warning), warning
        assert all("routes" not in line.split("changes to")[-1] for line in warning)


async def test_file_change_reloads_without_a_signal(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    setup = Setup(tmp_path, backend, file_provider={"watch": True, "interval": 0.1})
    with started(["serve", "--config", str(setup.path)], tmp_path) as router:
        await router.wait_ready(client, setup.admin)
        setup.rewrite([setup.route("app", "/app", backend), setup.route("watched", "/w", backend)])
        await eventually(
            lambda: _equals(routed_to(client, setup.public + "/w/1"), "/w/1"),
            message="the watched change applied",
        )

        # A broken file is reported once, not on every poll, and the routes keep serving.
        setup.path.write_text("routes: {not: [a list}\n", encoding="utf-8")
        await eventually(
            lambda: _equals(metric(client, setup.admin, FAILED), 1), message="failed reload"
        )
        assert await routed_to(client, setup.public + "/w/2") == "/w/2"

        # Edited in place (same inode) rather than renamed over.
        text = setup.path.read_text(encoding="utf-8")
        assert "invalid YAML" in router.stderr(), text
        fixed = dict(setup.config)
        fixed["routes"] = [
            setup.route("app", "/app", backend),
            setup.route("edited", "/e", backend),
        ]
        with setup.path.open("w", encoding="utf-8") as handle:
            handle.write(yaml.safe_dump(fixed))
        await eventually(
            lambda: _equals(routed_to(client, setup.public + "/e/1"), "/e/1"),
            message="the in-place edit applied",
        )
        assert await metric(client, setup.admin, FAILED) == 1
        assert await metric(client, setup.admin, OK) == 2
        assert await routed_to(client, setup.public + "/w/3") is None


async def test_same_size_edit_with_the_same_mtime_is_seen(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    setup = Setup(tmp_path, backend, file_provider={"watch": True, "interval": 0.1})
    setup.rewrite([setup.route("app", "/aaa", backend)])
    with started(["serve", "--config", str(setup.path)], tmp_path) as router:
        await router.wait_ready(client, setup.admin)
        assert await routed_to(client, setup.public + "/aaa/1") == "/aaa/1"
        before = setup.path.stat()
        text = setup.path.read_text(encoding="utf-8")
        assert text.count("/aaa") == 1
        with setup.path.open("r+", encoding="utf-8") as handle:
            handle.write(text.replace("/aaa", "/bbb"))
        os.utime(setup.path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = setup.path.stat()
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        )
        await eventually(
            lambda: _equals(routed_to(client, setup.public + "/bbb/1"), "/bbb/1"),
            message="the same-size edit applied",
        )
        assert router.popen.poll() is None


def _warning_lines(router: RouterProcess) -> list[str]:
    return [line for line in router.stderr().splitlines() if "WARNING" in line]


async def _equals(value: Any, expected: object) -> bool:
    return bool(await value == expected)
