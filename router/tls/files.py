"""Certificate files: loaded at start, then checked for changes and reloaded.

Renames (certbot), in-place writes and Kubernetes Secret volumes (a symlink swap) all
change the inode, size or modification time that is compared. A chain written before
its key fails the key check once; the next change (the key) loads the pair.
"""

from __future__ import annotations

import asyncio
import logging
import os

from router.config.models import CertificateFiles
from router.tls.store import CertificateStore

logger = logging.getLogger("commons_router.tls")

Signature = tuple[tuple[int, int, int], ...]


def file_source(files: CertificateFiles) -> str:
    return f"file:{files.cert}"


class CertificateFileWatcher:
    def __init__(
        self, store: CertificateStore, pairs: list[CertificateFiles], interval: float
    ) -> None:
        self.store = store
        self.pairs = pairs
        self.interval = interval
        self._seen: dict[str, Signature | None] = {}

    def load_all(self) -> None:
        """Load every pair now (start-up, before the listeners open)."""
        for pair in self.pairs:
            self._load(pair, _signature(pair))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            # One trip to a thread for all the stat calls (thousands of files, maybe).
            signatures = await asyncio.to_thread(_signatures, self.pairs)
            for pair, signature in zip(self.pairs, signatures, strict=True):
                if signature != self._seen.get(file_source(pair)):
                    contents = await asyncio.to_thread(_read, pair)
                    self._apply(pair, signature, contents)

    def _load(self, pair: CertificateFiles, signature: Signature | None) -> None:
        self._apply(pair, signature, _read(pair))

    def _apply(
        self,
        pair: CertificateFiles,
        signature: Signature | None,
        contents: tuple[bytes, bytes] | str,
    ) -> None:
        source = file_source(pair)
        self._seen[source] = signature
        if isinstance(contents, str):
            self.store.fail(source, contents)
        else:
            self.store.put(source, *contents)


def _signatures(pairs: list[CertificateFiles]) -> list[Signature | None]:
    return [_signature(pair) for pair in pairs]


def _signature(pair: CertificateFiles) -> Signature | None:
    try:
        stats = [os.stat(pair.cert), os.stat(pair.key)]
    except OSError:
        return None
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def _read(pair: CertificateFiles) -> tuple[bytes, bytes] | str:
    """Both files' bytes, or why they cannot be read."""
    contents = []
    for path in (pair.cert, pair.key):
        try:
            with open(path, "rb") as handle:
                contents.append(handle.read(1024 * 1024))
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
    return contents[0], contents[1]
