"""The cookies that bind login flows to the browser that started them.

SECURITY: a browser holds at most ``slots`` of them, whatever a page does (many iframes,
many tabs, abandoned or failed sign-ins): each cookie takes one of a fixed set of names,
so the ``Cookie`` header cannot grow until the site answers 400. A new flow takes a free
name, else the oldest flow's (the oldest gives way). Concurrent starts in a fresh browser
may pick the same free name: one of them then fails and is offered to start again.

A value is ``<started, ms, hex>.<tag>.<binding>``: ``tag`` (a prefix of the SHA-256 of the
flow's ``state``) lets a callback find its cookie, ``binding`` is the secret whose hash the
flow keeps server-side.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from router_plugins.sessions import CookieSettings

_TAG_LEN = 12
# Names this router may send back in a Set-Cookie to clear them (anything else is left).
_CLEARABLE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_STRAY = 32


def state_tag(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()[:_TAG_LEN]


@dataclass(frozen=True, slots=True)
class FlowCookie:
    name: str
    started: int
    tag: str
    binding: str


class FlowCookies:
    __slots__ = ("_prefix", "names")

    def __init__(self, cookie: CookieSettings, slots: int) -> None:
        self._prefix = cookie.named("login-")
        self.names = tuple(f"{self._prefix}{i}" for i in range(slots))

    def found(self, raw: str | None) -> tuple[list[FlowCookie], list[str]]:
        """The flow cookies in a ``Cookie`` header, and the names of any other cookies in
        their namespace (an older naming, garbled values) that should be cleared."""
        flows: list[FlowCookie] = []
        stray: list[str] = []
        if not raw or self._prefix not in raw:
            return flows, stray
        for part in raw.split(";"):
            name, _, value = part.strip().partition("=")
            if not name.startswith(self._prefix):
                continue
            parsed = _parse(name, value.strip()) if name in self.names else None
            if parsed is not None:
                flows.append(parsed)
            elif _CLEARABLE.fullmatch(name) and len(stray) < _MAX_STRAY:
                stray.append(name)
        return flows, sorted(set(stray))

    def choose(self, flows: list[FlowCookie]) -> str:
        """The name for a new flow: a free one, else the oldest flow's."""
        taken = {f.name for f in flows}
        free = [name for name in self.names if name not in taken]
        if free:
            return secrets.choice(free)
        return min(flows, key=lambda f: f.started).name

    def of_state(self, raw: str | None, state: str) -> FlowCookie | None:
        """This flow's cookie in the header, if the browser still has it."""
        if not state:
            return None
        tag = state_tag(state)
        for flow in self.found(raw)[0]:
            if flow.tag == tag:
                return flow
        return None

    @staticmethod
    def value(state: str, binding: str) -> str:
        return f"{int(time.time() * 1000):x}.{state_tag(state)}.{binding}"


def _parse(name: str, value: str) -> FlowCookie | None:
    started, _, rest = value.partition(".")
    tag, _, binding = rest.partition(".")
    if not binding or len(tag) != _TAG_LEN or len(started) > 16:
        return None
    try:
        return FlowCookie(name, int(started, 16), tag, binding)
    except ValueError:
        return None
