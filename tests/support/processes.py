"""Run the real ``commons-router`` command as a subprocess and poll it with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import ClientError, ClientSession, ClientTimeout
from multidict import CIMultiDict

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
_TIMEOUT = ClientTimeout(total=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def router_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_ROUTER")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command that is expected to finish on its own (check, version, bad configs)."""
    return subprocess.run(
        [sys.executable, "-m", "router", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env or router_env(),
        cwd=cwd,
        check=False,
    )


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write atomically (rename), as an editor or a ConfigMap update would."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def base_config(tmp: Path, routes: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listener": {"listen": f"127.0.0.1:{free_port()}"},
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "drain": {"delay": 0, "grace": 5},
        "access_log": {"path": str(tmp / "access.log")},
        "file_provider": {"watch": False},
        "routes": routes,
    }
    config.update(overrides)
    return config


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await probe()
        except (TimeoutError, ClientError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached in {timeout}s; last: {last!r}")
        await asyncio.sleep(interval)


async def get(session: ClientSession, url: str, **kwargs: Any) -> tuple[int, str, CIMultiDict[str]]:
    async with session.get(url, timeout=_TIMEOUT, **kwargs) as response:
        return response.status, await response.text(), CIMultiDict(response.headers)


class RouterProcess:
    """``python -m router ARGS`` with stdout and stderr captured in files."""

    def __init__(self, args: list[str], workdir: Path, *, env: dict[str, str] | None = None):
        self.args = args
        self.stdout_path = workdir / f"router-{id(self)}.out"
        self.stderr_path = workdir / f"router-{id(self)}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "router", *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env or router_env(),
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def send(self, signum: signal.Signals) -> None:
        self.popen.send_signal(signum)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.popen.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"router did not exit in {timeout}s; stderr:\n{self.stderr()}")
            await asyncio.sleep(0.05)
        return code

    async def wait_ready(
        self, session: ClientSession, admin_url: str, timeout: float = 15.0
    ) -> None:
        async def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"router exited with {self.popen.returncode}; stderr:\n{self.stderr()}"
                )
            status, _, _ = await get(session, admin_url + "/readyz")
            return status == 200

        await eventually(ready, timeout=timeout, message="router ready")

    def kill(self) -> None:
        """Stop the router and anything it started (its session)."""
        # The process group also holds the workers of a supervisor that already exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


@contextlib.contextmanager
def started(
    args: list[str], workdir: Path, *, env: dict[str, str] | None = None
) -> Iterator[RouterProcess]:
    process = RouterProcess(args, workdir, env=env)
    try:
        yield process
    finally:
        process.kill()
