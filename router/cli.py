"""The ``commons-router`` command: serve | dev | check | version.

Exit codes: 0 ok, 1 invalid input or configuration, 2 usage error.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from yarl import URL

from router.api import DevOptions
from router.buildinfo import version_text
from router.config.loader import (
    ConfigError,
    LineMap,
    LoadedConfig,
    load_config_file,
    render_config_error,
    report_invalid_config,
)
from router.config.models import (
    Admin,
    Config,
    Drain,
    Endpoint,
    FileProvider,
    Listener,
    PluginEntry,
    Route,
)
from router.config.types import split_host_port

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

logger = logging.getLogger("commons_router.cli")


def _host_port(value: str) -> str:
    try:
        split_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


class _VersionAction(argparse.Action):
    """``--version``, reading the build commit only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help=str(kwargs.get("help", "")))

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(version_text())
        parser.exit(EXIT_OK)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="commons-router",
        description="Authenticating edge router that shows which code served each request.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="print the version and build commit, and exit"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the router from a configuration file (production)"
    )
    serve.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--routes-socket", help=argparse.SUPPRESS)
    serve.add_argument("--admin-socket", help=argparse.SUPPRESS)

    dev = commands.add_parser(
        "dev",
        help="zero-config local proxy in front of the app you are writing",
        description=(
            "Proxy --listen (default 127.0.0.1:8080) to UPSTREAM_URL. Without an upstream, "
            "answer with a page showing what the router saw and what it would add."
        ),
    )
    dev.add_argument(
        "upstream", nargs="?", metavar="UPSTREAM_URL", help="e.g. http://127.0.0.1:3000"
    )
    dev.add_argument("--listen", type=_host_port, default="127.0.0.1:8080", metavar="HOST:PORT")
    dev.add_argument(
        "--admin-listen", type=_host_port, default="127.0.0.1:9901", metavar="HOST:PORT"
    )
    dev.add_argument(
        "--source",
        metavar="DIR",
        help="git checkout of the app: its commit (marked dirty when changed) is the provenance",
    )

    check = commands.add_parser("check", help="validate a configuration file and list every error")
    check.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")

    inspect = commands.add_parser(
        "inspect",
        help="fetch a URL and show and verify which code served it",
        description="Exit status 0 only when the router's provenance signature verified.",
    )
    inspect.add_argument("url", metavar="URL")
    inspect.add_argument("--json", action="store_true", help="one JSON object on stdout")
    inspect.add_argument(
        "--keys", metavar="URL", help="JWKS URL or file (default: the site's provenance keys)"
    )
    inspect.add_argument("--cookie", metavar="NAME=VALUE", help="send this Cookie header")
    inspect.add_argument("--bearer", metavar="TOKEN", help="send Authorization: Bearer TOKEN")
    inspect.add_argument(
        "--header", default=None, help="provenance header name (default: Provenance)"
    )

    commands.add_parser("version", help="print the version and build commit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "version":
        print(version_text())
        return EXIT_OK
    if args.command == "check":
        return _check(Path(args.config))
    if args.command == "serve":
        return _serve(Path(args.config), args.worker_index, args.admin_socket, args.routes_socket)
    if args.command == "inspect":
        from router.inspect import run

        return run(
            args.url,
            as_json=args.json,
            keys=args.keys,
            cookie=args.cookie,
            bearer=args.bearer,
            header=args.header,
        )
    return _dev(args.upstream, args.listen, args.admin_listen, args.source)


def _load(path: Path) -> LoadedConfig:
    from router.app import check_config

    loaded = load_config_file(path)
    check_config(loaded)
    return loaded


def _check(path: Path) -> int:
    try:
        loaded = _load(path)
    except ConfigError as exc:
        print(render_config_error(exc), file=sys.stderr)
        count = len(exc.issues)
        print(f"{path}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return EXIT_INVALID
    print(f"{path}: ok ({len(loaded.config.routes)} routes, {len(loaded.config.plugins)} plugins)")
    return EXIT_OK


def _serve(
    path: Path, worker_index: int | None, admin_socket: str | None, routes_socket: str | None
) -> int:
    from router.server import configure_logging, serve

    try:
        loaded = _load(path)
    except ConfigError as exc:
        report_invalid_config(exc)
        return EXIT_INVALID
    configure_logging()
    return serve(
        loaded,
        config_path=path,
        worker_index=worker_index,
        admin_unix_path=admin_socket,
        routes_socket=routes_socket,
    )


def _is_loopback(listen: str) -> bool:
    host = split_host_port(listen)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _dev_plugins(listen: str, source: str | None) -> list[PluginEntry]:
    """The installed plugins that take part in the development proxy, each with the
    settings it asks for (:meth:`router.api.Plugin.dev_preset`), in the order they ask."""
    from router.registry import discover_plugins

    options = DevOptions(source=source, loopback=_is_loopback(listen), environ=os.environ)
    presets = {}
    for name, cls in discover_plugins().items():
        preset = cls.dev_preset(options)
        if preset is not None:
            presets[name] = preset
    chosen = [
        (preset.order, name, preset)
        for name, preset in presets.items()
        if all(required in presets for required in preset.requires)
    ]
    return [
        PluginEntry(name=name, config=dict(preset.config)) for _, name, preset in sorted(chosen)
    ]


def dev_config(
    upstream: str | None, listen: str, admin_listen: str, source: str | None = None
) -> Config:
    route = (
        Route(name="dev", upstreams=[Endpoint(url=upstream)])
        if upstream
        else Route(name="dev", builtin="echo")
    )
    return Config(
        listener=Listener(listen=listen),
        admin=Admin(listen=admin_listen),
        drain=Drain(delay=0, grace=5),
        file_provider=FileProvider(watch=False),
        plugins=_dev_plugins(listen, source),
        routes=[route],
    )


def _dev(upstream: str | None, listen: str, admin_listen: str, source: str | None = None) -> int:
    from pydantic import ValidationError

    from router.server import configure_logging, serve

    if upstream is not None and "://" not in upstream:
        upstream = f"http://{upstream}"
    if source is not None and not Path(source).is_dir():
        print(f"commons-router dev: --source {source}: not a directory", file=sys.stderr)
        return EXIT_INVALID
    try:
        config = dev_config(upstream, listen, admin_listen, source)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        print(f"commons-router dev: {message}", file=sys.stderr)
        return EXIT_INVALID
    configure_logging()
    if not _is_loopback(listen):
        logger.warning(
            "dev mode is listening on %s, which is not a loopback address: anyone on the "
            "network can reach it",
            listen,
        )
    if not _is_loopback(admin_listen):
        logger.warning(
            "dev mode's admin listener is on %s, which is not a loopback address: anyone on "
            "the network can read its metrics and routes",
            admin_listen,
        )
    target = str(URL(upstream)) if upstream else "the built-in echo page"
    logger.info("dev mode: http://%s -> %s", listen, target)
    return serve(LoadedConfig(config, "<dev>", LineMap()), config_path=None, dev_mode=True)
