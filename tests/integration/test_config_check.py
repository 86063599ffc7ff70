"""``check`` runs the start-up validation ``serve`` does (without binding ports), with
``file:line`` for every problem, "did you mean" for misspelt keys, and environment
overrides of any setting."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from aiohttp import ClientSession

from router.config.loader import ConfigError, load_config_text
from router.testing import Backend
from tests.support.processes import (
    free_port,
    get,
    router_env,
    run_cli,
    started,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    return path


UNREADABLE_KEY = """\
listener: {{listen: "127.0.0.1:{port}"}}
admin: {{listen: "127.0.0.1:{admin}"}}
plugins:
  - name: tracing
    config: {{exporter: none}}
  - name: provenance
    config:
      key_file: {key}
routes:
  - {{name: app, builtin: echo}}
"""


@pytest.mark.parametrize("command", ["check", "serve"])
def test_an_unreadable_key_file_is_reported_at_its_line(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nowhere" / "key.pem"
    path = write(
        tmp_path,
        UNREADABLE_KEY.format(port=free_port(), admin=free_port(), key=missing),
    )
    result = run_cli(command, "--config", str(path))
    assert result.returncode == 1, result.stderr
    assert f"{path}:8: plugins[1].config.key_file: cannot read {missing}" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_does_not_bind_ports(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write(
            tmp_path,
            f'listener: {{listen: "127.0.0.1:{port}"}}\nroutes:\n  - {{name: a, builtin: echo}}\n',
        )
        result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr


def test_check_reports_unloadable_tls_files(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listener:\n"
        f"  tls_cert: {tmp_path}/cert.pem\n"
        f"  tls_key: {tmp_path}/key.pem\n"
        "routes:\n  - {name: a, builtin: echo}\n",
    )
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}:2: listener.tls_cert: cannot load {tmp_path}/cert.pem" in result.stderr


def test_check_refuses_what_only_start_refused_before(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "workers: 2\nlistener: {listen: '127.0.0.1:8080'}\n"
        "plugins:\n  - name: sessions\n    config: {store: memory}\n"
        "routes:\n  - {name: a, builtin: echo}\n",
    )
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}:5: plugins[0].config.store: the memory store" in result.stderr


@pytest.mark.parametrize("text", ["", "\n", "# nothing here yet\n"])
def test_an_empty_file_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}:1: the file is empty" in result.stderr


def test_misspelt_keys_get_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listener:\n  lisen: 127.0.0.1:8080\n"
        "routes:\n  - name: a\n    builtin: echo\n    timeouts: {conect: 1}\n",
    )
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}:2: listener.lisen: unknown key (did you mean 'listen'?)" in result.stderr
    assert "routes[0].timeouts.conect: unknown key (did you mean 'connect'?)" in result.stderr
    path = write(
        tmp_path,
        "plugins:\n  - name: tracing\n    config: {exportr: none}\n"
        "routes:\n  - name: a\n    builtin: echo\n    plugins: {ip_filter: {alow: []}}\n"
        "  - name: b\n    builtin: echo\n    upstreem: []\n",
    )
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    err = result.stderr
    assert "routes[1].upstreem: unknown key (did you mean 'upstreams'?)" in err
    path = write(
        tmp_path,
        "plugins:\n  - name: tracing\n    config: {exportr: none}\n"
        "  - name: ip_filter\n"
        "routes:\n  - name: a\n    builtin: echo\n    plugins: {ip_filter: {alow: []}}\n",
    )
    err = run_cli("check", "--config", str(path)).stderr
    assert f"{path}:3: plugins[0].config.exportr: unknown key (did you mean 'exporter'?)" in err
    assert "routes[0].plugins.ip_filter.alow: unknown key (did you mean 'allow'?)" in err


BASE = "routes:\n  - name: a\n    builtin: echo\n    retries: 1\nlog: {level: info}\n"


def test_environment_overrides_any_setting() -> None:
    env = {
        "COMMONS_ROUTER_LOG__LEVEL": "debug",
        "COMMONS_ROUTER_LOG__FORMAT": "json",
        "COMMONS_ROUTER_WORKERS": "3",
        "COMMONS_ROUTER_TRUSTED_PROXIES": '["10.0.0.0/8"]',
        "COMMONS_ROUTER_ROUTES__0__RETRIES": "4",
        "COMMONS_ROUTER_ADMIN__LISTEN": "0.0.0.0:9901",
        "COMMONS_ROUTER_BUILD_COMMIT": "abc",  # not a setting: left alone
        "OTHER": "x",
    }
    config = load_config_text(BASE, environ=env).config
    assert config.log.level == "debug" and config.log.format == "json"
    assert config.workers == 3
    assert config.trusted_proxies == ["10.0.0.0/8"]
    assert config.routes[0].retries == 4
    assert config.admin.listen == "0.0.0.0:9901"


def test_bad_environment_values_name_the_variable() -> None:
    env = {"COMMONS_ROUTER_LOG__LEVEL": "loud", "COMMONS_ROUTER_ROUTES__5__RETRIES": "1"}
    with pytest.raises(ConfigError) as caught:
        load_config_text(BASE, environ=env)
    text = str(caught.value)
    assert "log.level" in text and "(from COMMONS_ROUTER_LOG__LEVEL)" in text
    assert "no list entry [5] to set (from COMMONS_ROUTER_ROUTES__5__RETRIES)" in text
    env = {"COMMONS_ROUTER_LOG__LEVL": "debug"}
    with pytest.raises(ConfigError, match="did you mean 'level'"):
        load_config_text(BASE, environ=env)


async def test_serve_takes_settings_from_the_environment(
    tmp_path: Path, backend: Backend, client: ClientSession
) -> None:
    port, admin = free_port(), free_port()
    path = write(
        tmp_path,
        f'listener: {{listen: "127.0.0.1:{port}"}}\n'
        "drain: {delay: 0}\naccess_log: {enabled: false}\n"
        f"routes:\n  - name: app\n    upstreams: [{{url: '{backend.url}'}}]\n",
    )
    env = router_env(COMMONS_ROUTER_ADMIN__LISTEN=f"127.0.0.1:{admin}")
    with started(["serve", "--config", str(path)], tmp_path, env=env) as router:
        await router.wait_ready(client, f"http://127.0.0.1:{admin}")
        assert (await get(client, f"http://127.0.0.1:{port}/"))[0] == 200
        router.send(signal.SIGTERM)
        assert await router.wait_exit() == 0
