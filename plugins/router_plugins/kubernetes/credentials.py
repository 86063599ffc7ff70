"""Where the API server is and how to authenticate: in-cluster or from a kubeconfig."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("commons_router.kubernetes")

TOKEN_MAX_AGE = 60.0
"""Re-read the service-account token this often (the kubelet rotates it)."""


class CredentialsError(OSError):
    """Credentials cannot be loaded; the message says what is missing.

    An OSError, so `commons-router serve` reports it as a start-up problem (no traceback).
    """


class Credentials:
    """The server URL, TLS settings and a bearer token that is refreshed as it rotates."""

    def __init__(
        self,
        server: str,
        ssl_context: ssl.SSLContext | None,
        load_token: Callable[[], Awaitable[str | None]] | None,
        description: str,
    ) -> None:
        self.server = server.rstrip("/")
        self.ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._load_token = load_token
        self._token: str | None = None
        self._loaded_at = -TOKEN_MAX_AGE
        self.description = description

    async def token(self) -> str | None:
        if self._load_token is None:
            return None
        now = time.monotonic()
        if self._token is None or now - self._loaded_at >= TOKEN_MAX_AGE:
            self._token = await self._load_token()
            self._loaded_at = now
        return self._token

    def invalidate(self) -> None:
        """Reload the token before the next call (after a 401)."""
        self._token = None


def _server_url(host: str, port: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"https://{host}:{port}"


def _tls_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def in_cluster_env() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def load_in_cluster(service_account_dir: str) -> Credentials:
    """Blocking (reads files): call it in a thread."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise CredentialsError(
            "in-cluster credentials need KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT"
        )
    directory = Path(service_account_dir)
    token_path, ca_path = directory / "token", directory / "ca.crt"
    for path in (token_path, ca_path):
        if not path.is_file():
            raise CredentialsError(f"in-cluster credentials: {path} is missing")
    try:
        context = _tls_context(str(ca_path), None, None)
    except (OSError, ssl.SSLError) as exc:
        raise CredentialsError(f"in-cluster credentials: cannot load {ca_path}: {exc}") from None

    async def read_token() -> str | None:
        try:
            token = await asyncio.to_thread(token_path.read_text)
        except OSError as exc:
            logger.warning("cannot read the service-account token %s: %s", token_path, exc)
            return None
        return token.strip() or None

    return Credentials(_server_url(host, port), context, read_token, "in-cluster service account")


def load_kubeconfig(path: str | None, context: str | None) -> Credentials:
    """Blocking (reads files, may run exec plugins): call it in a thread.

    Uses the ``kubernetes`` package's loader, so every kubeconfig feature it supports
    (contexts, client certificates, exec and auth-provider tokens) works here too.
    """
    try:
        from kubernetes import client, config
    except ImportError:
        raise CredentialsError(
            "kubeconfig support needs the 'kubernetes' package: "
            "pip install 'commons-router[kubernetes]'"
        ) from None
    configuration: Any = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except Exception as exc:  # the loader raises many types (ConfigException, OSError, ...)
        where = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise CredentialsError(f"cannot load kubeconfig {where}: {exc}") from None
    server = str(configuration.host)
    context_ssl: ssl.SSLContext | None = None
    if server.startswith("https://"):
        try:
            context_ssl = _tls_context(
                configuration.ssl_ca_cert, configuration.cert_file, configuration.key_file
            )
        except (OSError, ssl.SSLError) as exc:
            raise CredentialsError(f"kubeconfig TLS settings: {exc}") from None
        if not configuration.verify_ssl:
            # insecure-skip-tls-verify in the kubeconfig: honoured, but said loudly.
            logger.warning("kubeconfig disables TLS verification for %s", server)
            context_ssl.check_hostname = False
            context_ssl.verify_mode = ssl.CERT_NONE

    def current_token() -> str | None:
        hook = configuration.refresh_api_key_hook
        if hook is not None:
            hook(configuration)
        # The key's name differs between versions of the kubernetes package.
        keys = configuration.api_key
        value = str(keys.get("BearerToken") or keys.get("authorization") or "")
        return value.removeprefix("Bearer ").strip() or None

    async def read_token() -> str | None:
        return await asyncio.to_thread(current_token)

    name = context or "current context"
    return Credentials(server, context_ssl, read_token, f"kubeconfig ({name})")
