"""The router's own code version: package version, build commit, and (in Kubernetes) the
digest of the image it runs from.

Where the commit comes from, first match wins:
1. ``COMMONS_ROUTER_BUILD_COMMIT`` in the environment (for builds from a bare source tree);
2. ``router/_build.py``, written into wheels and sdists built from a git checkout (setup.py);
3. the git checkout the code runs from (an editable install or a source tree);
4. otherwise ``unknown``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from router import __version__
from router.gitstate import read_git_state

COMMIT_ENV = "COMMONS_ROUTER_BUILD_COMMIT"
UNKNOWN = "unknown"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class BuildInfo:
    version: str
    commit: str
    dirty: bool | None
    """True when the shipped code differed from ``commit`` at build time; None if not known."""
    source: str
    """Where ``commit`` was read: ``environment``, ``build``, ``git`` or ``none``."""


def _from_build_record() -> tuple[str, bool | None] | None:
    try:
        from router import _build  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    commit = str(getattr(_build, "COMMIT", UNKNOWN))
    dirty = getattr(_build, "DIRTY", None)
    if commit == UNKNOWN:
        return None
    return commit, dirty if isinstance(dirty, bool) else None


def read_build_info(source_root: Path | None = None) -> BuildInfo:
    commit = os.environ.get(COMMIT_ENV, "").strip()
    if commit:
        return BuildInfo(__version__, commit, None, "environment")
    recorded = _from_build_record()
    if recorded is not None:
        return BuildInfo(__version__, recorded[0], recorded[1], "build")
    root = source_root or Path(__file__).resolve().parent.parent
    state = read_git_state(root)
    if state is not None:
        return BuildInfo(__version__, state.commit, state.dirty, "git")
    return BuildInfo(__version__, UNKNOWN, None, "none")


@cache
def build_info() -> BuildInfo:
    return read_build_info()


def build_commit() -> str:
    """The commit the router was built from, or ``unknown``."""
    return build_info().commit


def version_text() -> str:
    info = build_info()
    dirty = ", with uncommitted changes" if info.dirty else ""
    return f"commons-router {info.version} (commit {info.commit}{dirty})"


class RouterImage:
    """The digest of the container image this router runs from, once something (the
    Kubernetes provider, from its own Pod's status) has learnt it. Absent outside
    Kubernetes: never invented."""

    __slots__ = ("_digest", "_listeners")

    def __init__(self) -> None:
        self._digest: str | None = None
        self._listeners: list[Callable[[str], None]] = []

    @property
    def digest(self) -> str | None:
        return self._digest

    def publish(self, digest: str) -> bool:
        """Record ``sha256:…``; anything else is refused. True when it changed."""
        if not _DIGEST.fullmatch(digest) or digest == self._digest:
            return False
        self._digest = digest
        for listener in self._listeners:
            listener(digest)
        return True

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(digest)`` whenever the digest is learnt or changes."""
        self._listeners.append(listener)


ROUTER_IMAGE = RouterImage()
