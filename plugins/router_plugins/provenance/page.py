"""The human page at ``/.well-known/commons-router/provenance``: which code answers this
host and path, and how to check the signature of any response."""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router_plugins.provenance.fields import Record

PAGE_PATH = "/.well-known/commons-router/provenance"
KEYS_PATH = "/.well-known/commons-router/provenance-keys"

STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:52em;margin:3em auto;padding:0 1em;"
    "color:#1b1b1b}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em}"
    "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .6em;"
    "border-bottom:1px solid #ddd;vertical-align:top}th{width:11em;color:#555;font-weight:600}"
    "code,pre{background:#f3f3f3;padding:0 .3em;overflow-wrap:anywhere}"
    "pre{padding:.8em;white-space:pre-wrap}.dirty{color:#a40000;font-weight:600}"
    ".endpoint{margin-bottom:1.2em}"
)
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class PageData:
    host: str
    origin: str
    """``scheme://host[:port]`` as the client reached the router."""
    route: str | None
    router: Record
    endpoints: Sequence[Record]
    header: str
    label: str
    keyid: str | None
    covered: Sequence[str]
    request_id: str
    dev_key: bool
    on_request: bool = False
    trace_id: str | None = None
    """Signatures are made only for requests with ``Accept-Signature``."""


def _link(url: str, text: str) -> str:
    # SECURITY: only http(s) URLs become links; anything else is shown as text.
    if url.startswith(("https://", "http://")):
        return f'<a href="{html.escape(url)}" rel="noopener noreferrer">{html.escape(text)}</a>'
    return html.escape(text)


def commit_url(repository: str, commit: str) -> str | None:
    if not repository.startswith(("https://", "http://")) or not commit.isalnum():
        return None
    return f"{repository.rstrip('/')}/commit/{commit}"


def _router_extra_rows(router: Mapping[str, str | bool]) -> str:
    rows = []
    if router.get("router-dirty"):
        rows.append(
            '<tr><th>uncommitted changes</th>'
            '<td><span class="dirty">yes: built from a modified tree</span></td></tr>\n'
        )
    digest = router.get("router-image-digest")
    if isinstance(digest, str):
        rows.append(f"<tr><th>image digest</th><td><code>{html.escape(digest)}</code></td></tr>\n")
    return "".join(rows)


def _rows(fields: Mapping[str, str | bool]) -> str:
    repository = str(fields.get("repo", ""))
    rows = []
    for key, value in fields.items():
        if key == "route" or key.startswith("router"):
            continue
        if isinstance(value, bool):
            cell = '<span class="dirty">yes: uncommitted changes</span>' if value else "no"
            rows.append(f"<tr><th>uncommitted changes</th><td>{cell}</td></tr>")
            continue
        if key == "repo":
            cell = _link(value, value)
        elif key == "commit":
            url = commit_url(repository, value)
            cell = _link(url, value) if url else html.escape(value)
            cell = f"<code>{cell}</code>"
        else:
            cell = f"<code>{html.escape(value)}</code>"
        rows.append(f"<tr><th>{html.escape(key)}</th><td>{cell}</td></tr>")
    return "".join(rows) or '<tr><td colspan="2">no code version is known</td></tr>'


def render_page(data: PageData) -> str:
    router = data.router.fields
    host = html.escape(data.host)
    if data.endpoints:
        endpoints = "".join(
            f'<div class="endpoint"><table>{_rows(record.fields)}</table></div>'
            for record in data.endpoints
        )
    else:
        endpoints = "<p>This host and path are answered by the router itself.</p>"
    route = f"<code>{html.escape(data.route)}</code>" if data.route else "none (no route matches)"
    if data.keyid is not None:
        covered = " ".join(html.escape(c) for c in data.covered)
        dev_warning = (
            '<p class="dirty">This router runs in development mode: its signing key was '
            "generated at start and is thrown away when it stops.</p>"
            if data.dev_key
            else ""
        )
        when = (
            "Responses to requests that ask for it with an <code>Accept-Signature</code> "
            "header (<code>commons-router inspect</code> does) carry"
            if data.on_request
            else "Every response from this host carries"
        )
        verify = f"""
<p>Every response from this host carries a <code>{html.escape(data.header)}</code> header.
{when} an <a href="https://www.rfc-editor.org/rfc/rfc9421">RFC&nbsp;9421</a> HTTP message
signature (<code>Signature-Input</code> and <code>Signature</code>, label
<code>{html.escape(data.label)}</code>, Ed25519) made by the router with key
<code>{html.escape(data.keyid)}</code>. The signature covers <code>{covered}</code>: the
status, the provenance, the request id and the method, host and path you asked for. It does
not cover the body (bodies are streamed; see the router's README).</p>
{dev_warning}
<p>Public keys: <a href="{KEYS_PATH}"><code>{KEYS_PATH}</code></a> (JWKS). To check a page:</p>
<pre>commons-router inspect {html.escape(data.origin)}/some/page</pre>
<p>(add <code>--keys URL</code> to check against keys published elsewhere, e.g. in this
cloud's public configuration repository).</p>"""
    else:
        verify = "<p>Responses are not signed on this router.</p>"
    trace = (
        f" &middot; trace id <code>{html.escape(data.trace_id)}</code>" if data.trace_id else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Provenance of {host}</title><style>{STYLE}</style></head>
<body>
<h1>Which code answers <code>{host}</code>?</h1>
<h2>Application</h2>
<p>Route {route}. Code version of each endpoint that serves it:</p>
{endpoints}
<h2>Router</h2>
<table>
<tr><th>version</th><td><code>commons-router {html.escape(str(router["router"]))}</code></td></tr>
<tr><th>commit</th><td><code>{html.escape(str(router["router-commit"]))}</code></td></tr>
{_router_extra_rows(router)}</table>
<h2>How to verify</h2>
{verify}
<p><small>request id <code>{html.escape(data.request_id)}</code>{trace}</small></p>
</body></html>
"""
