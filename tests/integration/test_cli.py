"""The real ``commons-router`` command: exit codes, error reports, dev mode, admin port."""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap
from pathlib import Path

import orjson
from aiohttp import ClientSession

from router import __version__
from router.testing import Backend
from tests.support.processes import (
    base_config,
    eventually,
    free_port,
    get,
    router_env,
    run_cli,
    started,
    write_config,
)

BAD_CONFIG = textwrap.dedent(
    """\
    listener:
      listen: "127.0.0.1:notaport"
    bogus: 1
    workers: 0
    routes:
      - name: a
        upstreams:
          - url: ftp://example.com
        extra_key: 1
      - name: b
        path: relative
        builtin: echo
    """
)


def write(tmp_path: Path, text: str, name: str = "router.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def assert_clean_failure(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert 'File "' not in stderr


# --- serve / check with bad configuration -------------------------------------------------


def test_serve_bad_config_lists_every_error_with_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_CONFIG)
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 1, result.stderr
    assert_clean_failure(result.stderr)
    assert result.stdout == ""
    expected = [
        f"{path}:2: listener.listen: ",
        f"{path}:3: bogus: unknown key",
        f"{path}:4: workers: ",
        f"{path}:8: routes[0].upstreams[0].url: invalid upstream 'ftp://example.com'",
        f"{path}:9: routes[0].extra_key: unknown key",
        f"{path}:11: routes[1].path: a route path starts with '/'",
    ]
    for line in expected:
        assert line in result.stderr, result.stderr
    # One message: a header line, then one line per error (in file order), nothing else.
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("commons-router: invalid configuration")
    assert len(lines) == 1 + len(expected), result.stderr
    numbers = [
        int(m.group(1))
        for m in (re.match(rf"{re.escape(str(path))}:(\d+):", ln) for ln in lines[1:])
        if m
    ]
    assert numbers == sorted(numbers)


def test_check_bad_config_lists_every_error_and_counts_them(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_CONFIG)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert_clean_failure(result.stderr)
    assert f"{path}:3: bogus: unknown key" in result.stderr
    assert f"{path}:9: routes[0].extra_key: unknown key" in result.stderr
    assert f"{path}: 6 errors" in result.stderr


def test_serve_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 1
    assert_clean_failure(result.stderr)
    assert f"{path}: file not found" in result.stderr


def test_check_unreadable_path(tmp_path: Path) -> None:
    result = run_cli("check", "--config", str(tmp_path))
    assert result.returncode == 1
    assert_clean_failure(result.stderr)
    assert "cannot read file" in result.stderr


def test_serve_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "routes:\n  - name: a\n    upstreams: [\n  - name: b\n")
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 1
    assert_clean_failure(result.stderr)
    assert re.search(rf"{re.escape(str(path))}:\d+: invalid YAML: ", result.stderr), result.stderr


def test_config_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- just\n- a list\n")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}:1: the configuration must be a YAML mapping" in result.stderr


def test_missing_environment_variable_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        routes:
          - name: app
            upstreams:
              - url: "${CR_TEST_UPSTREAM}"
        """,
    )
    result = run_cli("serve", "--config", str(path), env=router_env())
    assert result.returncode == 1
    assert_clean_failure(result.stderr)
    assert (
        f"{path}:4: routes[0].upstreams[0].url: environment variable CR_TEST_UPSTREAM is not set"
        in result.stderr
    )


def test_missing_environment_variable_does_not_hide_other_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        workers: 0
        routes:
          - name: app
            upstreams:
              - url: "${CR_TEST_UPSTREAM}"
        """,
    )
    result = run_cli("check", "--config", str(path), env=router_env())
    assert result.returncode == 1
    assert "environment variable CR_TEST_UPSTREAM is not set" in result.stderr
    assert f"{path}:1: workers: " in result.stderr
    # The emptied value is not reported a second time as an invalid URL.
    assert "invalid upstream" not in result.stderr
    assert f"{path}: 2 errors" in result.stderr


async def test_environment_variables_are_substituted(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    port, admin = free_port(), free_port()
    path = write(
        tmp_path,
        f"""\
        listener: {{listen: "127.0.0.1:${{CR_TEST_PORT}}"}}
        admin: {{listen: "127.0.0.1:${{CR_TEST_ADMIN:-{admin}}}"}}
        access_log: {{enabled: false}}
        file_provider: {{watch: false}}
        routes:
          - name: app
            upstreams:
              - url: "${{CR_TEST_UPSTREAM}}"
        """,
    )
    env = router_env(CR_TEST_PORT=str(port), CR_TEST_UPSTREAM=backend.url)
    assert run_cli("check", "--config", str(path), env=env).returncode == 0
    with started(["serve", "--config", str(path)], tmp_path, env=env) as router:
        await router.wait_ready(client, f"http://127.0.0.1:{admin}")
        status, body, _ = await get(client, f"http://127.0.0.1:{port}/from-env")
        assert status == 200
        assert orjson.loads(body)["target"] == "/from-env"


# --- check ---------------------------------------------------------------------------------


def test_check_good_file_prints_a_summary(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    write_config(
        path,
        base_config(
            tmp_path,
            [
                {"name": "a", "upstreams": [{"url": "http://127.0.0.1:1"}]},
                {
                    "name": "b",
                    "path": "/b",
                    "builtin": "echo",
                    "plugins": {"ip_filter": {"allow": ["10.0.0.0/8"]}},
                },
            ],
            plugins=[{"name": "ip_filter"}],
        ),
    )
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: ok (2 routes, 1 plugins)"
    assert result.stderr == ""


def test_check_reports_plugin_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        plugins:
          - name: no_such_plugin
          - name: ip_filter
            config:
              allow: [not-a-cidr]
        routes:
          - name: a
            upstreams: [{url: "http://127.0.0.1:1"}]
            plugins:
              no_such_plugin: {}
              ip_filter: {deny: [also-bad]}
        """,
    )
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert_clean_failure(result.stderr)
    assert f"{path}:2: plugins[0].name: unknown plugin 'no_such_plugin'" in result.stderr
    assert "ip_filter" in result.stderr.split("installed:")[1].splitlines()[0]
    assert f"{path}:5: plugins[1].config.allow: invalid CIDR 'not-a-cidr'" in result.stderr


def test_check_reports_route_block_for_plugin_not_enabled(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        routes:
          - name: a
            upstreams: [{url: "http://127.0.0.1:1"}]
            plugins:
              ip_filter: {allow: [10.0.0.0/8]}
        """,
    )
    for command in ("check", "serve"):
        result = run_cli(command, "--config", str(path))
        assert result.returncode == 1, command
        assert_clean_failure(result.stderr)
        assert (
            f"{path}:5: routes[0].plugins.ip_filter: plugin 'ip_filter' is not enabled"
            in result.stderr
        )


def test_check_reports_route_block_problems_next_to_unknown_plugins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        plugins:
          - name: no_such_plugin
        routes:
          - name: a
            upstreams: [{url: "http://127.0.0.1:1"}]
            plugins:
              ip_filter: {}
        """,
    )
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert "unknown plugin 'no_such_plugin'" in result.stderr
    assert f"{path}:7: routes[0].plugins.ip_filter: plugin 'ip_filter' is not enabled" in (
        result.stderr
    )
    assert f"{path}: 2 errors" in result.stderr


# --- usage and version ---------------------------------------------------------------------


def test_usage_errors_exit_2() -> None:
    for args in ([], ["frobnicate"], ["serve"], ["check"], ["dev", "--listen", "nope"]):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "usage: commons-router" in result.stderr, args
        assert_clean_failure(result.stderr)


def test_help_exits_0() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout and "check" in result.stdout


def test_version_prints_version_and_commit() -> None:
    result = run_cli("version", env=router_env(COMMONS_ROUTER_BUILD_COMMIT="0123abcd" * 5))
    assert result.returncode == 0
    assert result.stdout.strip() == f"commons-router {__version__} (commit {'0123abcd' * 5})"
    from_git = run_cli("version")
    assert from_git.returncode == 0
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert re.fullmatch(
        rf"commons-router {re.escape(__version__)} \(commit {head}"
        r"(, with uncommitted changes)?\)\n",
        from_git.stdout,
    ), from_git.stdout
    assert run_cli("--version").stdout == from_git.stdout


def test_serve_port_in_use_exits_1_without_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = base_config(tmp_path, [{"name": "a", "builtin": "echo"}])
        config["listener"]["listen"] = f"127.0.0.1:{port}"
        path = tmp_path / "router.yaml"
        write_config(path, config)
        result = run_cli("serve", "--config", str(path))
    assert result.returncode == 1
    assert_clean_failure(result.stderr)
    assert "cannot start" in result.stderr


# --- dev -----------------------------------------------------------------------------------


async def test_dev_proxies_to_upstream(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    port, admin = free_port(), free_port()
    args = ["dev", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
    with started([*args, backend.url], tmp_path) as router:
        await router.wait_ready(client, f"http://127.0.0.1:{admin}")
        status, body, headers = await get(client, f"http://127.0.0.1:{port}/api/x?q=1")
        assert status == 200
        seen = orjson.loads(body)
        assert seen["target"] == "/api/x?q=1"
        names = {name.lower(): value for name, value in seen["headers"]}
        assert names["x-request-id"] == headers["X-Request-Id"]
        assert names["x-forwarded-for"] == "127.0.0.1"
        # Only plugins' development notices (e.g. an in-memory signing key) may warn.
        assert "WARNING commons_router.cli" not in router.stderr()
        router.send(signal.SIGTERM)
        assert await router.wait_exit() == 0


async def test_dev_accepts_upstream_without_scheme(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    port, admin = free_port(), free_port()
    args = ["dev", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
    with started([*args, f"127.0.0.1:{backend.port}"], tmp_path) as router:
        await router.wait_ready(client, f"http://127.0.0.1:{admin}")
        status, body, _ = await get(client, f"http://127.0.0.1:{port}/x")
        assert status == 200
        assert orjson.loads(body)["path"] == "/x"


def test_dev_bad_upstream_exits_1() -> None:
    result = run_cli("dev", "--listen", f"127.0.0.1:{free_port()}", "ftp://example.com")
    assert result.returncode == 1
    assert_clean_failure(result.stderr)
    assert "invalid upstream" in result.stderr


async def test_dev_without_upstream_serves_the_echo_page(
    tmp_path: Path, client: ClientSession
) -> None:
    port, admin = free_port(), free_port()
    args = ["dev", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
    with started(args, tmp_path) as router:
        await router.wait_ready(client, f"http://127.0.0.1:{admin}")
        url = f"http://127.0.0.1:{port}/some/page?x=1"
        status, page, headers = await get(client, url, headers={"Cookie": "session=secret"})
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        assert "Headers the router adds" in page
        assert "X-Forwarded-For" in page
        assert headers["X-Request-Id"] in page
        assert "secret" not in page

        status, body, headers = await get(client, url, headers={"Accept": "application/json"})
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        document = orjson.loads(body)
        assert document["target"] == "/some/page?x=1"
        assert document["request_id"] == headers["X-Request-Id"]
        added = {name.lower(): value for name, value in document["added_headers"]}
        assert added["x-forwarded-for"] == "127.0.0.1"
        assert added["x-request-id"] == headers["X-Request-Id"]


async def test_dev_on_a_public_address_warns_loudly(tmp_path: Path, client: ClientSession) -> None:
    port, admin = free_port(), free_port()
    args = ["dev", "--listen", f"0.0.0.0:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
    with started(args, tmp_path) as router:
        await router.wait_ready(client, f"http://127.0.0.1:{admin}")
        warning = [
            line for line in router.stderr().splitlines() if "WARNING commons_router.cli" in line
        ]
        assert warning, router.stderr()
        assert f"0.0.0.0:{port}" in warning[0]
        assert "not a loopback address" in warning[0]
        assert len(warning) == 1, warning


async def test_dev_admin_on_a_public_address_warns_too(
    tmp_path: Path, client: ClientSession
) -> None:
    port, admin = free_port(), free_port()
    args = ["dev", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"0.0.0.0:{admin}"]
    with started(args, tmp_path) as router:
        await router.wait_ready(client, f"http://127.0.0.1:{admin}")
        warning = [
            line for line in router.stderr().splitlines() if "WARNING commons_router.cli" in line
        ]
        assert len(warning) == 1, router.stderr()
        assert f"admin listener is on 0.0.0.0:{admin}" in warning[0]


# --- admin endpoints are only on the admin port --------------------------------------------


async def test_admin_endpoints_are_not_on_the_public_port(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    config = base_config(
        tmp_path,
        [
            {"name": "app", "path": "/app", "upstreams": [{"url": backend.url}]},
            {"name": "echo", "path": "/metrics", "path_type": "Exact", "builtin": "echo"},
        ],
    )
    path = tmp_path / "router.yaml"
    write_config(path, config)
    public = f"http://{config['listener']['listen']}"
    admin = f"http://{config['admin']['listen']}"
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        status, text, _ = await get(client, admin + "/metrics")
        assert status == 200
        assert "commons_router_requests_total" in text
        for endpoint in ("/healthz", "/readyz", "/routes"):
            assert (await get(client, admin + endpoint))[0] == 200

        # /metrics on the public port is routed like any other path: here to the echo page.
        status, body, _ = await get(
            client, public + "/metrics", headers={"Accept": "application/json"}
        )
        assert status == 200
        assert orjson.loads(body)["route"] == "echo"
        for endpoint in ("/healthz", "/readyz", "/routes"):
            status, body, _ = await get(client, public + endpoint)
            assert status == 404, endpoint
            assert "No route" in body
            assert "commons_router" not in body
        # The backend sees admin-looking paths under its own prefix.
        status, body, _ = await get(client, public + "/app/metrics")
        assert orjson.loads(body)["path"] == "/app/metrics"

        await eventually(
            lambda: _has_metric(client, admin, 'commons_router_requests_total{route="echo"'),
            message="public requests counted on the admin port",
        )


async def _has_metric(client: ClientSession, admin: str, needle: str) -> bool:
    return needle in (await get(client, admin + "/metrics"))[1]
