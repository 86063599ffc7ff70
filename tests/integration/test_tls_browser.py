"""Headless Chromium loads pages over the router's TLS listener, trusting only a test CA.

The browser is told to trust the test CA's key (``--ignore-certificate-errors-spki-list``
with the CA's SPKI hash), not to ignore certificate errors: a certificate for another name,
or from another CA, still fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from router.testing import Backend, run_router
from tests.support.tls import TestCA

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="chromium is installed by tests/run.sh"
)


def spki_of_ca(ca: TestCA) -> str:
    return ca.spki_hash(ca.pem)


async def test_chromium_loads_https_pages_by_sni_and_refuses_uncovered_names(
    backend: Backend, tmp_path: Path
) -> None:
    from playwright.async_api import Error, async_playwright

    ca = TestCA()
    stranger = TestCA("not trusted")
    a = ca.write(tmp_path, "a", "a.example")
    b = stranger.write(tmp_path, "b", "b.example")
    config: dict[str, Any] = {
        "listeners": [{"name": "https", "listen": "127.0.0.1:0", "tls": {}}],
        "tls": {"certificates": [{"cert": str(c), "key": str(k)} for c, k in (a, b)]},
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }
    async with run_router(config) as router:
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--host-resolver-rules=MAP *.example 127.0.0.1",
            f"--ignore-certificate-errors-spki-list={spki_of_ca(ca)}",
        ]
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=args)
            try:
                page = await browser.new_page()
                response = await page.goto(f"https://a.example:{router.port}/hello?x=1")
                assert response is not None and response.status == 200
                assert '"path": "/hello"' in (await page.content()).replace('":"', '": "')
                security = await response.security_details()
                assert security is not None and security.get("subjectName") == "a.example"
                # Served, but by a CA the browser does not trust.
                with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
                    await page.goto(f"https://b.example:{router.port}/")
                # No certificate covers c.example: the handshake is refused.
                with pytest.raises(Error, match="ERR_"):
                    await page.goto(f"https://c.example:{router.port}/")
            finally:
                await browser.close()
