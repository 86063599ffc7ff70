#!/usr/bin/env bash
# Refresh the locks from pyproject.toml: exact versions and hashes of every package.
# Run it after changing a dependency in pyproject.toml, or to take newer releases
# (then run `bash tests/run.sh`, fix what they break, and commit the locks with the fix).
# Usage: bash requirements/lock.sh [--upgrade | --upgrade-package NAME ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! command -v uv >/dev/null; then
    echo "requirements/lock.sh: needs uv (pip install uv)" >&2
    exit 1
fi
common=(--quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
        --no-header --annotation-style line "$@")
# test.txt: runtime + tests, lint and types (what tests/run.sh installs).
uv pip compile "${common[@]}" pyproject.toml requirements/build.in \
    --extra kubernetes --extra test -o requirements/test.txt
# runtime.txt: what the container image installs, at the very versions the tests ran with.
uv pip compile "${common[@]}" pyproject.toml requirements/build.in \
    --extra kubernetes -c requirements/test.txt -o requirements/runtime.txt
