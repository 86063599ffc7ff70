"""The login-flow cookie slots and the words shown for a provider's error."""

from __future__ import annotations

from router_plugins.auth.flowcookies import FlowCookie, FlowCookies
from router_plugins.auth.provider_errors import provider_error_message
from router_plugins.sessions import CookieSettings

PREFIX = "commons-router-session-login-"


def slots(count: int = 3, *, secure: bool = False) -> FlowCookies:
    return FlowCookies(CookieSettings("commons-router-session", secure=secure, max_age=60), count)


def test_names_are_a_fixed_set_under_the_session_cookie_name() -> None:
    assert slots().names == (f"{PREFIX}0", f"{PREFIX}1", f"{PREFIX}2")
    assert slots(1, secure=True).names == (f"__Host-{PREFIX}0",)


def test_a_new_flow_takes_a_free_name_else_the_oldest() -> None:
    cookies = slots()
    taken = [FlowCookie(f"{PREFIX}0", 5, "t" * 12, "b"), FlowCookie(f"{PREFIX}2", 3, "u" * 12, "b")]
    assert cookies.choose(taken) == f"{PREFIX}1"
    full = [*taken, FlowCookie(f"{PREFIX}1", 4, "v" * 12, "b")]
    assert cookies.choose(full) == f"{PREFIX}2"  # started at 3: the oldest gives way


def test_values_are_found_by_state_and_strays_are_listed_for_removal() -> None:
    cookies = slots()
    raw = "; ".join(
        [
            "other=1",
            f"{PREFIX}0=" + FlowCookies.value("state-a", "bind-a"),
            f"{PREFIX}1=garbled",
            f"{PREFIX}4f2a9c01d3e5=old-style",
            f"{PREFIX}x[y=not-a-token-name",
        ]
    )
    flows, stray = cookies.found(raw)
    assert [(f.name, f.binding) for f in flows] == [(f"{PREFIX}0", "bind-a")]
    assert stray == [f"{PREFIX}1", f"{PREFIX}4f2a9c01d3e5"]
    found = cookies.of_state(raw, "state-a")
    assert found is not None and found.binding == "bind-a"
    assert cookies.of_state(raw, "state-b") is None
    assert cookies.of_state(raw, "") is None


def test_provider_errors_in_our_words_and_its_text_only_when_given() -> None:
    assert provider_error_message("Call 555-0100") == "The identity provider did not sign you in."
    assert "cancelled" in provider_error_message("access_denied")
    message = provider_error_message("access_denied", "No\u202egood\x00 " + "x" * 500)
    assert message.startswith("The sign-in was cancelled")
    assert 'The identity provider said: "No good x' in message
    assert "\u202e" not in message and "\x00" not in message
    assert len(message) < 300
