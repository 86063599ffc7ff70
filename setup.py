"""Build hook: record the git commit the package was built from (see router/gitstate.py).

A wheel gets ``router/_build.py`` with the commit and whether the shipped code was dirty;
an sdist carries the same file, so a wheel built later from the sdist (no git there) keeps
the commit of the checkout the sdist came from. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
GENERATED = Path("router", "_build.py")


def _gitstate():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_gitstate", ROOT / "router" / "gitstate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_gitstate"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _write_build_record(target_root: Path) -> None:
    gitstate = _gitstate()
    state = gitstate.read_git_state(ROOT)
    target = target_root / GENERATED
    if state is None and target.exists():
        return  # built from an sdist: keep the record the sdist carries
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(gitstate.generated_module(state), encoding="utf-8")


class BuildPyWithCommit(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            _write_build_record(Path(self.build_lib))


class SdistWithCommit(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        _write_build_record(Path(base_dir))


setup(cmdclass={"build_py": BuildPyWithCommit, "sdist": SdistWithCommit})
