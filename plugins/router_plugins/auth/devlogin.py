"""The development login of ``commons-router dev``: any name, no identity provider.

INSECURE by design, so it is loud about it: a red banner on the page, a warning in the
log, and the plugin refuses to start it outside dev mode or on a non-loopback listener.
"""

from __future__ import annotations

import html

from aiohttp import web

DEV_ISSUER = "commons-router-dev"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Development login (INSECURE)</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em}}
.warn{{background:#b00020;color:#fff;padding:1em;border-radius:6px;font-weight:bold}}
input,button{{font:inherit;padding:.3em .6em}}</style></head>
<body><p class="warn">INSECURE DEVELOPMENT LOGIN &mdash; anyone can sign in as anyone.
Never use it in production (it only runs under <code>commons-router dev</code> on a
loopback address).</p>
<h1>Sign in (development)</h1>
<form method="post" action="{action}">
<input type="hidden" name="rd" value="{rd}">
<p><label>Name <input name="name" required autofocus pattern="[A-Za-z0-9._@+-]{{1,64}}"></label></p>
<p><label>Groups (comma separated) <input name="groups"></label></p>
<p><button type="submit">Sign in</button></p>
</form>
<p><a href="{logout}">Sign out</a></p></body></html>
"""


def dev_login_page(action: str, rd: str, logout: str) -> web.Response:
    body = _PAGE.format(action=html.escape(action), rd=html.escape(rd), logout=html.escape(logout))
    return web.Response(
        text=body,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "X-Commons-Router-Dev-Login": "insecure"},
    )


def dev_claims(name: str, groups: str) -> dict[str, object] | None:
    name = name.strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._@+-" for c in name):
        return None
    email = name if "@" in name else f"{name}@dev.localhost"
    return {
        "sub": f"dev:{name}",
        "iss": DEV_ISSUER,
        "email": email,
        "email_verified": True,
        "preferred_username": name,
        "groups": [g.strip() for g in groups.split(",") if g.strip()][:20],
    }
