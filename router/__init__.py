"""commons-router: an authenticating edge router that shows which code served each request."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("commons-router")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
