"""``auth``: authentication (OIDC sessions, bearer JWTs) and per-route access policy."""

from router.api import NoConfig, Plugin


class AuthPlugin(Plugin[NoConfig]):
    name = "auth"
