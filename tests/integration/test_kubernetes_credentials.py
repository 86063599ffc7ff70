"""Credentials: in-cluster over TLS with a rotating token, and clear errors when missing."""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from router.testing import run_router
from router_plugins.kubernetes import KubernetesPlugin
from router_plugins.kubernetes.credentials import CredentialsError
from router_plugins.kubernetes.plugin import KubernetesSyncError, load_credentials
from router_plugins.kubernetes.settings import KubernetesSettings
from tests.support.kubeapi import KubeApiServer, kubeconfig
from tests.support.kubecluster import (
    POD_IPS,
    app_objects,
    endpoint,
    eventually,
    set_endpoints,
)
from tests.support.tls import self_signed


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate of its own (for 127.0.0.1) in ``directory/name``."""
    (directory / name).mkdir()
    return self_signed(directory / name)


@contextlib.asynccontextmanager
async def tls_api(server: KubeApiServer, cert: Path, key: Path) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        yield int(port)
    finally:
        server.close_watches()
        await runner.cleanup()


def service_account(directory: Path, token: str, ca: Path) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "token").write_text(token + "\n")
    (directory / "ca.crt").write_bytes(ca.read_bytes())
    return directory


def plugin(service_account_dir: Path, **extra: object) -> dict[str, object]:
    return {
        "plugins": [
            {
                "name": "kubernetes",
                "config": {
                    "service_account_dir": str(service_account_dir),
                    "backoff_initial": "20ms",
                    "backoff_max": "100ms",
                    "sync_timeout": 10,
                    **extra,
                },
            }
        ]
    }


async def test_in_cluster_tls_and_rotating_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = make_certificate(tmp_path, "apiserver")
    api = KubeApiServer(token="first-token")
    api.apply(*copy.deepcopy(app_objects(8080, "app-0")))
    accounts = service_account(tmp_path / "sa", "first-token", cert)
    async with tls_api(api, cert, key) as port:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
        async with run_router(plugin(accounts), plugins={"kubernetes": KubernetesPlugin}) as router:
            async with ClientSession() as client:

                async def endpoints() -> list[str]:
                    async with client.get(router.admin_url + "/routes") as response:
                        document = await response.json()
                    return [e["url"] for r in document["routes"] for e in r["endpoints"]]

                async def first() -> bool:
                    return await endpoints() == [f"http://{POD_IPS['app-0']}:8080"]

                await eventually(first, "routes are read in-cluster over TLS")
                assert api.unauthorized == 0

                # The kubelet rotates the token: the old one is refused from now on.
                api.token = "second-token"
                (accounts / "token").write_text("second-token\n")
                api.drop_watches()
                set_endpoints(api, [endpoint("app-1")])

                async def second() -> bool:
                    return await endpoints() == [f"http://{POD_IPS['app-1']}:8080"]

                await eventually(second, "the rotated token is read and used")
                assert api.unauthorized >= 1


async def test_untrusted_api_server_certificate_fails_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "commons_router.kubernetes")
    cert, key = make_certificate(tmp_path, "apiserver")
    other_ca, _ = make_certificate(tmp_path, "other-ca")
    api = KubeApiServer(token="t")
    async with tls_api(api, cert, key) as port:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
        accounts = service_account(tmp_path / "sa", "t", other_ca)
        with pytest.raises(
            KubernetesSyncError, match=re.escape("no complete list from https://127.0.0.1")
        ):
            async with run_router(
                plugin(accounts, sync_timeout=1), plugins={"kubernetes": KubernetesPlugin}
            ):
                pass
        assert api.calls == []  # the TLS handshake failed: no request was sent
    lines = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert lines
    assert all(f"TLS: the certificate of 127.0.0.1:{port} is not trusted" in x for x in lines)
    assert not any("SSLContext" in line or " object at 0x" in line for line in lines)


@pytest.mark.parametrize(
    ("settings", "env", "message"),
    [
        ({"credentials": "in_cluster"}, {}, "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT"),
        (
            {"credentials": "in_cluster", "service_account_dir": "/nonexistent"},
            {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
            "/nonexistent/token is missing",
        ),
        (
            {"credentials": "kubeconfig", "kubeconfig": "/nonexistent/config"},
            {},
            "cannot load kubeconfig /nonexistent/config",
        ),
        ({"credentials": "kubeconfig", "kubeconfig": "KUBECONFIG", "context": "nope"}, {}, "nope"),
    ],
)
def test_missing_credentials_are_named(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, str],
    env: dict[str, str],
    message: str,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if settings.get("kubeconfig") == "KUBECONFIG":
        settings = {
            **settings,
            "kubeconfig": str(kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")),
        }
    with pytest.raises(CredentialsError, match=message):
        load_credentials(KubernetesSettings.model_validate(settings))
