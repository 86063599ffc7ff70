"""``commons-router completion bash|zsh``: scripts generated from the parser, checked by
the shells themselves."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import run_cli


def complete(script: Path, *words: str) -> list[str]:
    """What bash offers for ``commons-router WORDS...`` (the last word being typed)."""
    line = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {script}\n"
        f"COMP_WORDS=(commons-router {line})\n"
        f"COMP_CWORD={len(words)}\n"
        "_commons_router\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return [word for word in result.stdout.splitlines() if word]


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = run_cli("completion", "bash")
    assert result.returncode == 0, result.stderr
    path = tmp_path_factory.mktemp("completion") / "commons-router.bash"
    path.write_text(result.stdout)
    return path


def test_bash_script_is_valid(bash_script: Path) -> None:
    subprocess.run(["bash", "-n", str(bash_script)], check=True, timeout=10)


def test_bash_completes_subcommands_and_options(bash_script: Path, tmp_path: Path) -> None:
    assert complete(bash_script, "") == [
        "serve",
        "dev",
        "check",
        "inspect",
        "version",
        "completion",
        "-h",
        "--help",
        "--version",
    ]
    assert complete(bash_script, "c") == ["check", "completion"]
    assert complete(bash_script, "serve", "--") == ["--help", "--config"]
    assert complete(bash_script, "completion", "") == ["bash", "zsh", "-h", "--help"]
    # Hidden options are not offered.
    assert "--worker-index" not in complete(bash_script, "serve", "--")
    (tmp_path / "router.yaml").write_text("")
    assert complete(bash_script, "check", "--config", f"{tmp_path}/rou") == [
        f"{tmp_path}/router.yaml"
    ]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is installed by tests/run.sh")
def test_zsh_script_is_valid(tmp_path: Path) -> None:
    result = run_cli("completion", "zsh")
    assert result.returncode == 0
    assert result.stdout.startswith("#compdef commons-router\n")
    path = tmp_path / "_commons-router"
    path.write_text(result.stdout)
    subprocess.run(["zsh", "-n", str(path)], check=True, timeout=10)


def test_unknown_shell_is_a_usage_error() -> None:
    assert run_cli("completion", "fish").returncode == 2
