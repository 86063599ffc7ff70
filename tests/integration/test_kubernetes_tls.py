"""TLS certificates from kubernetes.io/tls Secrets named by Ingress spec.tls, served by SNI;
Secrets created, changed, broken and deleted in the test API server."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path
from typing import Any

from tests.support.kubecluster import KubeCluster, eventually, run_cluster
from tests.support.tls import TestCA, served_common_name, served_names

LISTENERS = {
    "listeners": [
        {"name": "http", "listen": "127.0.0.1:0"},
        {"name": "https", "listen": "127.0.0.1:0", "tls": {}},
    ]
}


def tls_secret(name: str, chain: bytes, key: bytes, kind: str = "kubernetes.io/tls") -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "team-a"},
        "type": kind,
        "data": {
            "tls.crt": base64.b64encode(chain).decode(),
            "tls.key": base64.b64encode(key).decode(),
        },
    }


def with_tls(cluster: KubeCluster, secret_name: str | None, **annotations: str) -> None:
    ingress = cluster.api.get("Ingress", "team-a", "app")
    if secret_name is None:
        ingress["spec"].pop("tls", None)
    else:
        ingress["spec"]["tls"] = [{"hosts": ["app.test"], "secretName": secret_name}]
    ingress["metadata"]["annotations"].update(annotations)
    cluster.api.apply(ingress)


async def common_name(cluster: KubeCluster, ca: TestCA) -> str | None:
    port = cluster.router.port_of("https")
    return await asyncio.to_thread(served_common_name, port, "app.test", ca)


async def test_secret_created_changed_broken_and_deleted(tmp_path: Path) -> None:
    ca = TestCA()
    async with run_cluster(tmp_path, "app-0", router=LISTENERS) as cluster:
        # An unrelated Secret is never read.
        cluster.api.apply(tls_secret("unrelated", *ca.issue("app.test", common_name="no")))
        with_tls(cluster, "app-tls")
        assert await common_name(cluster, ca) is None  # named, not there yet

        async def problem_listed() -> bool:
            problems = (await cluster.routes())["problems"]
            return any(p["source"] == "secret:team-a/app-tls" for p in problems)

        await eventually(problem_listed, "the missing Secret is a problem on /routes")

        cluster.api.apply(tls_secret("app-tls", *ca.issue("app.test", common_name="v1")))

        async def serves(name: str | None) -> bool:
            return await common_name(cluster, ca) == name

        await eventually(lambda: serves("v1"), "the Secret's certificate is served")
        assert (await cluster.routes())["problems"] == []
        # A request over TLS reaches the pod.
        trust = ssl.create_default_context(cadata=ca.pem.decode())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", cluster.router.port_of("https"), ssl=trust, server_hostname="app.test"
        )
        writer.write(b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")

        cluster.api.apply(tls_secret("app-tls", *ca.issue("app.test", common_name="v2")))
        await eventually(lambda: serves("v2"), "the changed Secret is served")
        # The connection opened before the change is still answered.
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await reader.read(1)  # at least the start of the body
        writer.write(b"GET /y HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 5)
        assert b"HTTP/1.1 200" in rest
        writer.close()

        # Broken: the last good certificate keeps serving; the problem is listed.
        chain, _ = ca.issue("app.test", common_name="v3")
        cluster.api.apply(tls_secret("app-tls", chain, ca.issue("other.test")[1]))

        async def mismatch_listed() -> bool:
            problems = (await cluster.routes())["problems"]
            return any("does not match" in p["message"] for p in problems)

        await eventually(mismatch_listed, "the mismatched key is a problem on /routes")
        assert await common_name(cluster, ca) == "v2"

        cluster.api.apply(tls_secret("app-tls", *ca.issue("app.test"), kind="Opaque"))

        async def wrong_type_listed() -> bool:
            problems = (await cluster.routes())["problems"]
            return any("not 'kubernetes.io/tls'" in p["message"] for p in problems)

        await eventually(wrong_type_listed, "the wrong Secret type is a problem on /routes")
        assert await common_name(cluster, ca) == "v2"

        # Deleted: no certificate for app.test any more.
        cluster.api.delete("Secret", "team-a", "app-tls")
        await eventually(lambda: serves(None), "the deleted Secret's certificate is gone")
        await eventually(problem_listed, "the missing Secret is a problem again")

        secret_calls = [c for c in cluster.api.calls if c.resource == "secrets"]
        assert secret_calls
        for call in secret_calls:
            assert call.namespace == "team-a"
            assert call.params["fieldSelector"] == "metadata.name=app-tls"

        # No Ingress names it any more: the watch stops and the problem goes.
        with_tls(cluster, None)

        async def forgotten() -> bool:
            return (await cluster.routes())["problems"] == []

        await eventually(forgotten, "the Secret is no longer watched")


async def test_ssl_redirect_annotation_redirects_plain_http(tmp_path: Path) -> None:
    ca = TestCA()
    async with run_cluster(tmp_path, "app-0", router=LISTENERS) as cluster:
        cluster.api.apply(tls_secret("app-tls", *ca.issue("app.test")))
        with_tls(cluster, "app-tls", **{"commons-router.io/ssl-redirect": "true"})
        plain = f"http://127.0.0.1:{cluster.router.port_of('http')}/a?b=c"

        async def redirected() -> bool:
            async with cluster.client.get(
                plain, headers={"Host": "app.test"}, allow_redirects=False
            ) as response:
                return response.status == 308 and (
                    response.headers["Location"] == "https://app.test/a?b=c"
                )

        await eventually(redirected, "plain HTTP is redirected")
        names = await asyncio.to_thread(
            served_names, cluster.router.port_of("https"), "app.test", ca
        )
        assert names == ["app.test"]


async def test_without_a_tls_listener_no_secret_is_read(tmp_path: Path) -> None:
    async with run_cluster(tmp_path, "app-0") as cluster:
        with_tls(cluster, "app-tls")

        async def routed() -> bool:
            return (await cluster.get("/"))[0] == 200

        await eventually(routed, "the Ingress is routed")
        await asyncio.sleep(0.3)
        assert not [c for c in cluster.api.calls if c.resource == "secrets"]
