"""The static file provider: routes from the configuration file.

Reloaded on SIGHUP and when the file changes (polled, so it also follows the symlink swap
Kubernetes does for a mounted ConfigMap). A reload that fails validation keeps the routes
already serving and logs every problem.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from router.api.provider import ProviderUpdate, Publish
from router.config.loader import ConfigError, ConfigIssue, LoadedConfig, load_config_file
from router.config.models import Config
from router.observability.metrics import Metrics

logger = logging.getLogger("commons_router.file_provider")

Validate = Callable[[LoadedConfig], list[ConfigIssue]]

# Only the routes are reloaded; every other setting is read once, at start.
_RESTART_ONLY = tuple(name for name in Config.model_fields if name != "routes")


def _fingerprint(path: Path) -> tuple[int, int, int, bytes] | None:
    # The content's digest too: an in-place edit of the same size within one clock tick
    # changes neither inode, mtime nor size. Config files are small; this runs in a thread.
    try:
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size, digest)


class FileProvider:
    name = "file"

    def __init__(
        self,
        path: Path,
        initial: Config,
        validate: Validate,
        metrics: Metrics,
        *,
        watch: bool,
        interval: float,
    ) -> None:
        self._path = path
        self._current = initial
        self._validate = validate
        self._metrics = metrics
        self._watch = watch
        self._interval = interval
        self._reload_requested = asyncio.Event()
        self._fingerprint = _fingerprint(path)

    def initial_update(self) -> ProviderUpdate:
        return ProviderUpdate(self.name, tuple(self._current.routes))

    def request_reload(self) -> None:
        """Called on SIGHUP."""
        self._reload_requested.set()

    async def run(self, publish: Publish) -> None:
        while True:
            timeout = self._interval if self._watch else None
            try:
                await asyncio.wait_for(self._reload_requested.wait(), timeout)
                forced = True
            except TimeoutError:
                forced = False
            self._reload_requested.clear()
            fingerprint = await asyncio.to_thread(_fingerprint, self._path)
            if not forced and fingerprint == self._fingerprint:
                continue
            self._fingerprint = fingerprint
            await self._reload(publish)

    async def _reload(self, publish: Publish) -> None:
        try:
            loaded = await asyncio.to_thread(load_config_file, self._path, dict(os.environ))
            issues = self._validate(loaded)
            if issues:
                raise ConfigError(str(self._path), issues)
        except ConfigError as exc:
            self._metrics.reloads["failed"] += 1
            self._metrics.last_reload_ok = False
            logger.error(
                "configuration reload failed; the current routes keep serving:\n%s",
                exc.render(),
            )
            return
        new = loaded.config
        changed = [key for key in _RESTART_ONLY if getattr(new, key) != getattr(self._current, key)]
        if changed:
            logger.warning(
                "configuration reload: changes to %s take effect only after a restart",
                ", ".join(changed),
            )
        self._current = new
        self._metrics.reloads["ok"] += 1
        self._metrics.last_reload_ok = True
        self._metrics.last_reload = time.time()
        logger.info("configuration reloaded from %s", self._path)
        publish(ProviderUpdate(self.name, tuple(new.routes)))
