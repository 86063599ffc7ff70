"""The distribution: a wheel with the core, the built-in plugins under our namespace, the
console script and the plugin entry points; and a Dockerfile of the promised shape."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("commons_router-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_contents(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top_levels = {name.split("/")[0] for name in names if not name.startswith("commons_router-")}
    assert top_levels == {"router", "router_plugins"}
    assert "router/py.typed" in names
    assert "router_plugins/ip_filter/__init__.py" in names
    assert not any(name.startswith("plugins/") for name in names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[console_scripts]\ncommons-router = router.cli:main" in text
    plugins = text.split("[commons_router.plugins]\n", 1)[1].split("\n\n", 1)[0]
    assert "ip_filter = router_plugins.ip_filter:IpFilterPlugin" in plugins.splitlines()


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    bases = [line for line in text.splitlines() if line.startswith("ARG PYTHON_IMAGE=")]
    assert len(stages) >= 2, "multi-stage build"
    runtime = text[text.rindex("\nFROM ") :]
    assert "--no-index" in runtime, "runtime stage installs wheels only"
    assert "USER 10001" in runtime
    assert "HEALTHCHECK" in runtime and "/healthz" in runtime
    assert bases and all("@sha256:" in line for line in bases), "base image pinned by digest"
    assert all("${PYTHON_IMAGE}" in line for line in stages)
    assert "--require-hashes" in runtime and "requirements/runtime.txt" in runtime
    assert "BUILD_COMMIT" not in text, "the commit comes from the checkout, not a typed arg"


def _head() -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def _recorded_commit(text: str) -> str:
    scope: dict[str, object] = {}
    exec(text, scope)
    return str(scope["COMMIT"])


def test_wheel_records_the_commit_it_was_built_from(wheel: zipfile.ZipFile) -> None:
    record = wheel.read("router/_build.py").decode()
    assert _recorded_commit(record) == _head()


def test_an_installed_wheel_prints_its_commit(
    wheel: zipfile.ZipFile, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    wheel.extractall(site)
    script = "import router.buildinfo as b; print(b.__file__); print(b.version_text())"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    )
    module_file, text = result.stdout.splitlines()
    assert module_file.startswith(str(site)), "ran the wheel's code, not the source tree's"
    assert f"(commit {_head()}" in text


def test_a_wheel_built_from_the_sdist_keeps_the_commit(tmp_path: Path) -> None:
    """The sdist carries the record, so a build with no git at all still knows."""
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable, "-m", "build", "--sdist", "--no-isolation",
            "--outdir", str(dist), str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (sdist,) = dist.glob("commons_router-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "src", filter="data")
    (tree,) = (tmp_path / "src").iterdir()
    assert not (tree / ".git").exists()
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
            "--quiet", "--wheel-dir", str(wheels), str(tree),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = wheels.glob("commons_router-*.whl")
    with zipfile.ZipFile(built) as rebuilt:
        assert _recorded_commit(rebuilt.read("router/_build.py").decode()) == _head()
