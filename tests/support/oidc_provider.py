"""A real OpenID provider (npm ``oidc-provider``, tests/oidc/) on 127.0.0.1, and a scripted
user that signs in through its login form."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from html import unescape
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import ClientSession

from tests.support.redis_server import free_port

OIDC_DIR = Path(__file__).resolve().parent.parent / "oidc"


def router_client(
    client_id: str, router_port: int, secret: str = "router-secret"
) -> dict[str, Any]:
    """The OIDC client registration of a router listening on ``router_port``."""
    base = f"http://127.0.0.1:{router_port}"
    return {
        "client_id": client_id,
        "client_secret": secret,
        "redirect_uris": [f"{base}/.commons-router/callback"],
        "post_logout_redirect_uris": [
            f"{base}/public/logged-out",
            f"{base}/.commons-router/logged-out",
        ],
        "backchannel_logout_uri": f"{base}/.commons-router/backchannel-logout",
        "backchannel_logout_session_required": True,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
    }


class OidcProvider:
    def __init__(self, clients: list[dict[str, Any]]) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed (tests/run.sh installs it)")
        if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError("run `npm ci` in tests/oidc (tests/run.sh does)")
        self.node = node
        self.port = free_port()
        self.clients = clients
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: BinaryIO | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"commons-router-oidc-{self.port}.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log_file = self.log_path.open("ab")
        env = {**os.environ, "OP_PORT": str(self.port), "OP_CLIENTS": json.dumps(self.clients)}
        self.process = subprocess.Popen(
            [self.node, str(OIDC_DIR / "provider.mjs")],
            cwd=OIDC_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )
        deadline = time.monotonic() + 20
        url = self.issuer + "/.well-known/openid-configuration"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"oidc-provider exited: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("oidc-provider did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def counters(self, client: ClientSession) -> dict[str, int]:
        async with client.get(self.issuer + "/test/counters") as response:
            data: dict[str, int] = await response.json()
            return data


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S)
_INPUT = re.compile(r"<input([^>]*)>")
_ATTR = re.compile(r'([a-z-]+)="([^"]*)"')


def parse_form(html: str) -> tuple[str, dict[str, str]]:
    match = _FORM.search(html)
    if match is None:
        raise AssertionError(f"no form in page: {html[-1500:]}")
    fields = {}
    for attributes in _INPUT.findall(match.group(2)):
        attrs = dict(_ATTR.findall(attributes))
        if "name" in attrs:
            fields[attrs["name"]] = unescape(attrs.get("value", ""))
    return unescape(match.group(1)), fields


async def sign_in_at_provider(browser: ClientSession, login_url: str, user: str) -> str:
    """Follow ``login_url`` (the router's redirect to the provider) through the login form.

    Returns the URL the provider finally redirects to (the router's callback).
    """
    url = login_url
    for _ in range(10):
        async with browser.get(url, allow_redirects=False) as response:
            if response.status in (302, 303):
                url = _absolute(url, response.headers["Location"])
                if "/.commons-router/callback" in url:
                    return url
                continue
            page = await response.text()
        action, fields = parse_form(page)
        fields.update({"login": user, "password": "any"})
        async with browser.post(_absolute(url, action), data=fields, allow_redirects=False) as r:
            assert r.status in (302, 303), await r.text()
            url = _absolute(url, r.headers["Location"])
            if "/.commons-router/callback" in url:
                return url
    raise AssertionError("the provider never redirected back")


def _absolute(base: str, location: str) -> str:
    from urllib.parse import urljoin

    return urljoin(base, location)
