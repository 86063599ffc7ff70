"""The router's own code version: package version and build commit."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

from router import __version__

COMMIT_ENV = "COMMONS_ROUTER_BUILD_COMMIT"


@cache
def build_commit() -> str:
    """The commit the router was built from: set at image build, else read from git."""
    commit = os.environ.get(COMMIT_ENV, "").strip()
    if commit:
        return commit
    source = Path(__file__).resolve().parent.parent
    if (source / ".git").exists():
        try:
            result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
                ["git", "-C", str(source), "rev-parse", "HEAD"],  # noqa: S607
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        if result.returncode == 0:
            return result.stdout.strip()
    return "unknown"


def version_text() -> str:
    return f"commons-router {__version__} (commit {build_commit()})"
