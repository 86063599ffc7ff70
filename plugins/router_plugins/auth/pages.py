"""Small HTML pages the auth endpoints answer with."""

from __future__ import annotations

import html

from aiohttp import web

_SIGN_OUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign out</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em}}
button{{font:inherit;padding:.3em .8em}}</style></head>
<body><h1>Sign out</h1><p>Sign out of {host}?</p>
<form method="post" action="{action}"><input type="hidden" name="rd" value="{rd}">
<button type="submit">Sign out</button></form></body></html>
"""


def sign_out_page(host: str, action: str, rd: str) -> web.Response:
    """Asks for the POST that signs out: a link (GET) alone never ends a session."""
    body = _SIGN_OUT.format(host=html.escape(host), action=html.escape(action), rd=html.escape(rd))
    return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})
