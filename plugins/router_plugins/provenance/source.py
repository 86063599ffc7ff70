"""Development: the code version of a local git checkout, re-read while the router runs.

``commons-router dev --source DIR`` puts the checkout's commit (and whether it has
uncommitted changes) in the provenance of every response, so a page served from edited
code says so. git runs as a subprocess, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping
from types import MappingProxyType

logger = logging.getLogger("commons_router.plugin.provenance")

_SCP_LIKE = re.compile(r"^(?:[\w.-]+@)?([\w.-]+):(?!//)(.+)$")


def repository_url(remote: str) -> str:
    """A browsable URL for a git remote (``git@github.com:org/app.git`` → https)."""
    remote = remote.strip()
    match = _SCP_LIKE.match(remote)
    if match and "://" not in remote:
        remote = f"https://{match.group(1)}/{match.group(2)}"
    if remote.startswith(("ssh://", "git://")):
        remote = "https://" + remote.split("://", 1)[1].split("@", 1)[-1]
    if "://" in remote:
        scheme, rest = remote.split("://", 1)
        remote = f"{scheme}://{rest.rsplit('@', 1)[-1]}"  # never publish credentials
    return remote.removesuffix(".git")


async def _git(directory: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "git",
        "-C",
        directory,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=10)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, ""
    return process.returncode or 0, stdout.decode("utf-8", "replace").strip()


async def read_source(directory: str) -> dict[str, str]:
    """``repository``, ``commit`` and ``dirty`` of a checkout; ``code: unknown`` otherwise."""
    try:
        status, commit = await _git(directory, "rev-parse", "HEAD")
    except OSError as exc:
        return {"code": "unknown", "source_error": f"git cannot run: {exc.strerror or exc}"}
    if status != 0 or not commit:
        return {"code": "unknown", "source_error": f"{directory} is not a git checkout"}
    version = {"commit": commit}
    status, porcelain = await _git(directory, "status", "--porcelain")
    version["dirty"] = "true" if status != 0 or porcelain else "false"
    status, remote = await _git(directory, "config", "--get", "remote.origin.url")
    if status == 0 and remote:
        version["repository"] = repository_url(remote)
    return version


class SourceWatcher:
    """Keeps :attr:`version` up to date with the checkout (a new mapping on each change)."""

    def __init__(self, directory: str, interval: float) -> None:
        self.directory = directory
        self.interval = interval
        self.version: Mapping[str, str] = MappingProxyType({"code": "unknown"})
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        current = await read_source(self.directory)
        if current != dict(self.version):
            if "source_error" in current:
                logger.warning("provenance source: %s", current["source_error"])
            else:
                logger.info(
                    "provenance source %s: commit %s%s",
                    self.directory,
                    current["commit"],
                    " (uncommitted changes)" if current.get("dirty") == "true" else "",
                )
            self.version = MappingProxyType(current)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="provenance-source")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:  # keep the last known version; try again later
                logger.exception("provenance source: reading %s failed", self.directory)
