"""Where the router's own commit comes from: build record, environment, git, or unknown."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from router import buildinfo
from router.buildinfo import COMMIT_ENV, RouterImage, read_build_info
from router.gitstate import generated_module, read_git_state


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / "router").mkdir()
    (tmp_path / "router" / "app.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("docs\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    return tmp_path


def test_a_source_tree_without_git_says_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    monkeypatch.setattr(buildinfo, "_from_build_record", lambda: None)
    info = read_build_info(tmp_path)
    assert (info.commit, info.dirty, info.source) == ("unknown", None, "none")


def test_a_checkout_gives_its_commit_and_dirtiness_of_the_shipped_code(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    monkeypatch.setattr(buildinfo, "_from_build_record", lambda: None)
    head = git(checkout, "rev-parse", "HEAD")
    assert read_build_info(checkout) == buildinfo.BuildInfo(
        buildinfo.__version__, head, False, "git"
    )
    (checkout / "README.md").write_text("changed docs\n")
    assert read_build_info(checkout).dirty is False, "only shipped code makes a build dirty"
    (checkout / "router" / "app.py").write_text("x = 2\n")
    assert read_build_info(checkout).dirty is True


def test_head_is_read_from_the_files_when_git_is_missing(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = git(checkout, "rev-parse", "HEAD")
    git(checkout, "pack-refs", "--all")
    monkeypatch.setenv("PATH", "/nonexistent")
    state = read_git_state(checkout)
    assert state is not None
    assert (state.commit, state.dirty) == (head, None)


def test_the_environment_overrides_for_bare_source_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(COMMIT_ENV, "0123abc")
    info = read_build_info(tmp_path)
    assert (info.commit, info.source) == ("0123abc", "environment")


def test_the_generated_record_round_trips() -> None:
    state = read_git_state(Path(__file__).resolve().parents[2])
    scope: dict[str, object] = {}
    exec(generated_module(state), scope)
    if state is not None:
        assert scope["COMMIT"] == state.commit
    exec(generated_module(None), scope)
    assert (scope["COMMIT"], scope["DIRTY"]) == ("unknown", None)


def test_router_image_takes_only_digests_and_tells_listeners() -> None:
    image = RouterImage()
    seen: list[str] = []
    image.subscribe(seen.append)
    assert image.digest is None
    assert not image.publish("latest")
    assert not image.publish("sha256:short")
    digest = "sha256:" + "0f" * 32
    assert image.publish(digest)
    assert not image.publish(digest)
    assert (image.digest, seen) == (digest, [digest])
