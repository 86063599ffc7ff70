"""Every example configuration passes ``commons-router check`` — the same start-up checks
``serve`` makes — once the files it names exist. The examples name files under /etc; the
test writes real ones (certificates from a test CA, an Ed25519 key) in a temporary folder
and points the example there, changing nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.processes import run_cli
from tests.support.tls import TestCA

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
NAMED_FILE = re.compile(r"(/etc/[A-Za-z0-9._/-]+)")
"""Files the examples name; their names say what they hold."""


def materialize(example: str, root: Path, ca: TestCA) -> str:
    """The example's text with every file it names written under ``root``."""
    paths = sorted(set(NAMED_FILE.findall(example)))
    for name in paths:
        target = root / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
    for name in paths:
        target = root / name.lstrip("/")
        if target.exists():
            continue
        if name.endswith((".crt", "fullchain.pem")):
            host = target.parent.name if name.endswith("fullchain.pem") else target.stem
            if host.startswith("wildcard."):
                host = "*." + host.removeprefix("wildcard.")
            chain, key = ca.issue(host)
            target.write_bytes(chain)
            key_name = (
                "privkey.pem" if name.endswith("fullchain.pem") else target.stem + ".key"
            )
            (target.parent / key_name).write_bytes(key)
        elif "ca" in target.stem:
            target.write_bytes(ca.pem)
        elif name.endswith("provenance.pem"):
            target.write_bytes(
                Ed25519PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    return NAMED_FILE.sub(lambda m: str(root / m.group(1).lstrip("/")), example)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_passes_check_with_its_files(path: Path, tmp_path: Path) -> None:
    config = tmp_path / path.name
    config.write_text(materialize(path.read_text(), tmp_path / "files", TestCA()))
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"{config}: ok" in result.stdout
