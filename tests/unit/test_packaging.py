"""The distribution: a wheel with the core, the built-in plugins under our namespace, the
console script and the plugin entry points; and a Dockerfile of the promised shape."""

from __future__ import annotations

import subprocess
import sys
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
    assert len(stages) >= 2, "multi-stage build"
    runtime = text[text.rindex("\nFROM ") :]
    assert "--no-index" in runtime, "runtime stage installs wheels only"
    assert "USER 10001" in runtime
    assert "HEALTHCHECK" in runtime and "/healthz" in runtime
