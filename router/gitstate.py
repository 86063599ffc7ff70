"""The commit of a git checkout and whether the shipped code differs from it.

Used twice: by ``setup.py`` when a wheel or sdist is built (the result is written into the
package), and at run time by a router started from a source checkout. It has no import
of the rest of the router so that the build can load it on its own.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

SHIPPED_PATHS = ("router", "plugins", "pyproject.toml", "setup.py")
"""What a build ships: a change elsewhere (tests, docs) does not make the build dirty."""
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


@dataclass(frozen=True)
class GitState:
    commit: str
    dirty: bool | None
    """None when git itself is not available to compare the tree with the commit."""


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            ["git", "-c", "safe.directory=*", "-C", str(root), *args],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def _git_dir(root: Path) -> Path | None:
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():  # a worktree or submodule: "gitdir: PATH"
        text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text.removeprefix("gitdir:").strip())
            return target if target.is_absolute() else (root / target).resolve()
    return None


def _read_head(git_dir: Path) -> str | None:
    """HEAD's commit read from the files, for a build stage without the git program."""
    try:
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head if _SHA.fullmatch(head) else None
    ref = head.removeprefix("ref:").strip()
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        common = (git_dir / commondir.read_text(encoding="utf-8").strip()).resolve()
    for base in (git_dir, common):
        path = base / ref
        if path.is_file():
            value = path.read_text(encoding="utf-8").strip()
            return value if _SHA.fullmatch(value) else None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and _SHA.fullmatch(sha):
                return sha
    return None


def read_git_state(root: Path) -> GitState | None:
    """The checkout's commit and dirtiness, or None when ``root`` is not a git checkout."""
    git_dir = _git_dir(root)
    if git_dir is None:
        return None
    head = _git(root, "rev-parse", "--verify", "HEAD")
    commit = head.strip() if head and _SHA.fullmatch(head.strip()) else _read_head(git_dir)
    if commit is None:
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *SHIPPED_PATHS)
    return GitState(commit, None if status is None else bool(status.strip()))


def generated_module(state: GitState | None) -> str:
    """The text of ``router/_build.py``, the build's record of its commit."""
    commit = state.commit if state else "unknown"
    dirty = state.dirty if state else None
    return (
        '"""Written when this package was built (setup.py); not in the source tree."""\n\n'
        f"COMMIT = {commit!r}\n"
        f"DIRTY = {dirty!r}\n"
    )
