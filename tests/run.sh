#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then lint, types, tests.
# Usage: bash tests/run.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "tests/run.sh: Python 3.11 or newer is needed (found $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi

# System packages the tests use, installed only when missing (needs root, as on CI).
missing=()
command -v git >/dev/null || missing+=(git)
# openssl: certificates for the TLS listener and in-cluster Kubernetes API tests.
command -v openssl >/dev/null || missing+=(openssl)
# ip (iproute2): the network namespace the Kubernetes tests' pods listen in. Only root can
# make one; without root those tests are skipped, saying why.
if [[ $(id -u) -eq 0 ]] && ! command -v ip >/dev/null; then missing+=(iproute2); fi
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "tests/run.sh: please install: ${missing[*]}" >&2
        exit 1
    fi
fi

# Authentication tests: a real redis-server, chromium (driven by Playwright), Node for
# the OpenID provider and nginx. Installed only when missing; safe to run again.
auth_missing=()
command -v redis-server >/dev/null || auth_missing+=(redis-server)
command -v chromium >/dev/null || auth_missing+=(chromium)
command -v node >/dev/null || auth_missing+=(nodejs)
command -v npm >/dev/null || auth_missing+=(npm)
# nginx: the forward-auth test puts a real nginx (auth_request) in front of the router.
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || auth_missing+=(nginx-light)
if ((${#auth_missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${auth_missing[@]}" >/dev/null
    else
        echo "tests/run.sh: please install: ${auth_missing[*]}" >&2
        exit 1
    fi
fi
# The OpenID provider the tests start (oidc-provider, pinned by the lockfile).
if ! cmp -s tests/oidc/package-lock.json tests/oidc/node_modules/.installed-lock.json; then
    (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error \
        && cp package-lock.json node_modules/.installed-lock.json)
fi
# Express 5 for the path differential tests (tests/express, pinned by its lockfile).
if ! cmp -s tests/express/package-lock.json tests/express/node_modules/.installed-lock.json; then
    (cd tests/express && npm ci --no-audit --no-fund --loglevel=error \
        && cp package-lock.json node_modules/.installed-lock.json)
fi

# Provenance page test: chromium, driven headless by Playwright. Installed only when missing.
if ! command -v chromium >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "tests/run.sh: please install: chromium" >&2
        exit 1
    fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
# Exactly the locked versions (requirements/test.txt, hashes checked), then the project
# itself without resolving anything again. Refresh the lock with requirements/lock.sh.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --no-deps -r requirements/test.txt
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m pip check

echo "== ruff"
"$VENV/bin/ruff" check router plugins tests benchmarks
echo "== mypy (strict: router, router_plugins)"
"$VENV/bin/mypy"
echo "== pytest"
"$VENV/bin/pytest" "$@"
