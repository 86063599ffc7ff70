"""End to end, as a developer uses it: ``commons-router dev --source DIR UPSTREAM`` and
``commons-router inspect`` as separate processes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

from aiohttp import ClientSession

from router.testing import Backend
from tests.support.processes import free_port, router_env, started


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


async def inspect_json(url: str) -> tuple[int, dict[str, object]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "inspect",
        "--json",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=router_env(),
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    assert out, err.decode()
    return process.returncode, json.loads(out)


async def test_dev_source_commit_is_served_signed_and_inspected(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    repo = tmp_path / "app"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "dev@example.org")
    git(repo, "config", "user.name", "Dev")
    git(repo, "remote", "add", "origin", "https://github.com/example/app.git")
    (repo / "main.py").write_text("print('v1')\n")
    git(repo, "add", "main.py")
    git(repo, "commit", "-q", "-m", "v1")
    head = git(repo, "rev-parse", "HEAD")

    port, admin = free_port(), free_port()
    args = ["dev", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
    with started([*args, "--source", str(repo), backend.url], tmp_path) as router:
        await router.wait_ready(client, f"http://127.0.0.1:{admin}")
        code, result = await inspect_json(f"http://127.0.0.1:{port}/hello")
        assert code == 0, result
        app_fields = {
            k: v for k, v in result["provenance"].items() if k != "router-dirty"  # type: ignore[union-attr]
        }
        assert app_fields == {
            "repo": "https://github.com/example/app",
            "commit": head,
            "dirty": False,
            "route": "dev",
            "router": result["provenance"]["router"],  # type: ignore[index]
            "router-commit": result["provenance"]["router-commit"],  # type: ignore[index]
        }
        assert result["signature"]["result"] == "valid"  # type: ignore[index]
        assert result["trace_id"]
        assert "DEVELOPMENT MODE" in router.stderr()  # the in-memory key is announced
        router.send(signal.SIGTERM)
        assert await router.wait_exit() == 0
