"""What the router says when the identity provider answers a sign-in with an error.

SECURITY: anyone can send a browser to the callback with ``error=<any text>``, so the
page is made of our own words for the codes OAuth 2.0 and OpenID Connect define. The
provider's ``error_description`` is shown only for a sign-in this browser has under way,
and then quoted as the provider's.
"""

from __future__ import annotations

import unicodedata

_WORDS = {
    "access_denied": "The sign-in was cancelled, or the identity provider refused it.",
    "login_required": "The identity provider needs you to sign in.",
    "interaction_required": "The identity provider needs you to confirm the sign-in.",
    "consent_required": "The identity provider needs your consent to sign you in here.",
    "account_selection_required": "The identity provider needs you to choose an account.",
    "temporarily_unavailable": "The identity provider is busy. Please try again in a moment.",
    "server_error": "The identity provider had an internal error.",
    "invalid_request": "The identity provider refused the sign-in request.",
    "invalid_scope": "The identity provider refused the requested permissions.",
    "unauthorized_client": "The identity provider does not allow this site to sign you in.",
    "unsupported_response_type": "The identity provider refused the sign-in request.",
    "invalid_request_uri": "The identity provider refused the sign-in request.",
    "invalid_request_object": "The identity provider refused the sign-in request.",
    "request_not_supported": "The identity provider refused the sign-in request.",
    "request_uri_not_supported": "The identity provider refused the sign-in request.",
    "registration_not_supported": "The identity provider refused the sign-in request.",
}
_UNKNOWN = "The identity provider did not sign you in."
# Control, format (bidi overrides), surrogate, private-use and unassigned characters.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_DESCRIPTION_MAX = 200


def provider_error_message(code: str, description: str | None = None) -> str:
    """Our words for ``code``; with ``description`` (only for this browser's own sign-in),
    the provider's text after them, marked as the provider's."""
    message = _WORDS.get(code, _UNKNOWN)
    if description:
        visible = "".join(
            " " if unicodedata.category(c) in _HIDDEN else c
            for c in description[: 4 * _DESCRIPTION_MAX]
        )
        text = " ".join(visible.split())[:_DESCRIPTION_MAX]
        if text:
            message += f' The identity provider said: "{text}"'
    return message
