"""Build and run one router process from a validated configuration.

Every long-lived resource (client session, access log, plugins, provider tasks,
listeners) is entered on one ``AsyncExitStack`` in start order and left in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, TCPConnector, web

from router.admin import AdminState, build_admin_app
from router.api.errors import PluginConfigError
from router.api.plugin import RESERVED_PREFIXES, Handler, Middleware, Plugin, PluginServices
from router.api.provider import Provider, ProviderUpdate
from router.builtin.echo import EchoHandler
from router.builtin.redirect import redirect
from router.builtin.unavailable import invalid_backend, unavailable
from router.config.loader import ConfigError, ConfigIssue, LoadedConfig
from router.config.models import CertificateFiles, Config, Hsts, ListenerSpec
from router.config.types import split_host_port
from router.dispatch import ChainEnd, Dispatcher
from router.errors import error_page, router_exception_handlers
from router.http.drain import DrainSignal, stop_serving
from router.http.protocol import GuardedServer
from router.http.request import request_factory
from router.observability.accesslog import AccessLog
from router.observability.metrics import Metrics
from router.proxy.body import BodyLimits
from router.proxy.client import UpstreamClient
from router.proxy.forward import Forwarder
from router.proxy.headers import HeaderPolicy, TrustedPeers
from router.proxy.upstream import EndpointRegistry, EndpointState
from router.registry import (
    PluginClass,
    PluginSpec,
    discover_plugins,
    resolve_plugins,
    route_plugin_configs,
    start_plugin,
    validate_all,
)
from router.routing.compiler import RouteCompiler, isolate
from router.routing.file_provider import FileProvider
from router.routing.holder import TableHolder
from router.routing.original import OriginalRequests
from router.routing.relay import RouteRelay
from router.routing.watcher import RouteWatcher, run_provider
from router.tls.files import CertificateFileWatcher, file_source
from router.tls.listener import HandshakeCounts, TlsListener, policy
from router.tls.store import CertificateStore

logger = logging.getLogger("commons_router")

_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def check_config(loaded: LoadedConfig, available: dict[str, PluginClass] | None = None) -> None:
    """Raise :class:`ConfigError` with every plugin problem of an otherwise valid config."""
    issues = validate_all(loaded.config, available or discover_plugins(), loaded.line_map)
    if issues:
        raise ConfigError(loaded.source, issues)


async def preflight(loaded: LoadedConfig, available: dict[str, PluginClass] | None = None) -> None:
    """The start-up checks of ``serve`` that need no port and no network (files readable,
    keys and certificates parse), for ``check``. Raises :class:`ConfigError` with every
    problem, located in the file."""
    available = available if available is not None else discover_plugins()
    specs, issues = resolve_plugins(loaded.config, available, loaded.line_map)
    issues = [*issues, *_tls_issues(loaded.config)]
    async with ClientSession() as http:
        services = PluginServices(
            http=http,
            dev_mode=False,
            logger=logging.getLogger("commons_router.plugin"),
            router_config=loaded.config,
        )
        for spec in specs:
            try:
                await spec.cls(spec.config, services).preflight()
            except PluginConfigError as exc:
                location = ("plugins", spec.index, "config", *exc.where)
                issues.append(ConfigIssue(location, exc.message))
            except ConfigError as exc:
                issues.extend(exc.issues)
    if issues:
        raise locate_issues(ConfigError(loaded.source, issues), loaded)


def locate_issues(error: ConfigError, loaded: LoadedConfig) -> ConfigError:
    """The error with plugin problems placed at their entry (``plugins[2].config.key_file``)
    and every problem given its line in the file."""
    names = [entry.name for entry in loaded.config.plugins]
    issues = []
    for issue in error.issues:
        location = issue.location
        if len(location) >= 2 and location[0] == "plugins" and location[1] in names:
            rest = location[2:]
            if rest[:1] != ("config",):
                rest = ("config", *rest)
            location = ("plugins", names.index(str(location[1])), *rest)
        line = issue.line if issue.line is not None else loaded.line_map.find(location)
        issues.append(ConfigIssue(location, issue.message, line))
    return ConfigError(loaded.source, issues)


def _tls_issues(config: Config) -> list[ConfigIssue]:
    """Certificate files that cannot be read or do not hold a matching chain and key."""
    pairs: list[tuple[CertificateFiles, tuple[str | int, ...]]] = [
        (pair, ("tls", "certificates", index, "cert"))
        for index, pair in enumerate(config.tls.certificates)
    ]
    if not config.listeners and config.listener.tls_cert and config.listener.tls_key:
        legacy = CertificateFiles(cert=config.listener.tls_cert, key=config.listener.tls_key)
        pairs.append((legacy, ("listener", "tls_cert")))
    issues = []
    for pair, location in pairs:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(pair.cert, pair.key)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            message = f"cannot load {pair.cert} and {pair.key}: {reason}"
            issues.append(ConfigIssue(location, message))
    return issues


def hsts_value(hsts: Hsts) -> str:
    value = f"max-age={int(hsts.max_age)}"
    if hsts.include_subdomains:
        value += "; includeSubDomains"
    if hsts.preload:
        value += "; preload"
    return value


class RouterRuntime:
    """One router process: public listener, admin listener, providers, plugins."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        config_path: Path | None = None,
        dev_mode: bool = False,
        reuse_port: bool = False,
        admin_unix_path: str | None = None,
        routes_socket: str | None = None,
        available_plugins: dict[str, PluginClass] | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.config_path = config_path
        self.dev_mode = dev_mode
        self.reuse_port = reuse_port
        self.admin_unix_path = admin_unix_path
        self.routes_socket = routes_socket
        """A worker's connection to the supervisor's shared providers (router.routing.relay)."""
        self._available = available_plugins
        self.metrics = Metrics()
        self.holder = TableHolder()
        self.stack = contextlib.AsyncExitStack()
        self.plugins: list[tuple[PluginSpec, Plugin[Any]]] = []
        self.file_provider: FileProvider | None = None
        self.admin_state: AdminState | None = None
        self.public_port = 0
        """The first listener's port."""
        self.public_ports: dict[str, int] = {}
        """Every listener's bound port, by listener name."""
        self.certificates: CertificateStore | None = None
        self._tls_listeners: dict[str, TlsListener] = {}
        self._handshakes: HandshakeCounts | None = None
        self.admin_port = 0
        self._public_runners: list[web.ServerRunner] = []
        self.drain_signal = DrainSignal()
        self.access_log: AccessLog | None = None
        self._servers: list[web.Server] = []

    async def __aenter__(self) -> RouterRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stack.aclose()
            raise

    async def _start(self) -> None:
        config = self.config
        available = self._available if self._available is not None else discover_plugins()
        specs, issues = resolve_plugins(config, available, self.loaded.line_map)
        if issues:
            raise ConfigError(self.loaded.source, issues)

        session = await self.stack.enter_async_context(self._client_session())
        access_log: AccessLog | None = None
        if config.access_log.enabled:
            access_log = AccessLog(config.access_log.path)
            access_log.start()
            self.stack.push_async_callback(access_log.stop)
            self.access_log = self.metrics.access_log = access_log
        self.metrics.connections = lambda: sum(len(server.connections) for server in self._servers)
        self.metrics.endpoints = self._current_endpoints

        services = PluginServices(
            http=session,
            dev_mode=self.dev_mode,
            logger=logging.getLogger("commons_router.plugin"),
            router_config=config,
            providers_elsewhere=self.routes_socket is not None,
            metrics=self.metrics,
        )
        listeners = config.public_listeners()
        self.certificates = services.certificates = self._certificate_store(config, listeners)
        for spec in specs:
            plugin = await start_plugin(spec, services, self.loaded.source, self.loaded.line_map)
            self.stack.push_async_callback(plugin.stop)
            self.plugins.append((spec, plugin))

        trusted = TrustedPeers(config.trusted_proxies)
        originals = OriginalRequests(
            self.holder,
            trusted,
            merge_slashes=config.paths.merge_slashes,
            reject_encoded_slash=config.paths.reject_encoded_slash,
            reject_encoded_controls=config.paths.reject_encoded_controls,
        )
        services.set_original_resolver(originals.resolve, originals.resolve_prefixed)
        protected = list(services.protected_headers)
        for listener in listeners:
            mutual = listener.tls.client_certificates if listener.tls is not None else None
            if mutual is not None and mutual.subject_header is not None:
                protected.append(mutual.subject_header)
        upstream_client = UpstreamClient()
        self.stack.push_async_callback(upstream_client.close)
        forwarder = Forwarder(
            upstream_client,
            HeaderPolicy(protected),
            trusted,
            self.metrics,
            observers=tuple(services.upstream_observers),
            body_limits=BodyLimits(
                idle_timeout=config.limits.body_timeout,
                buffer_size=config.limits.request_buffer_size,
                min_rate=config.limits.body_min_rate,
                rate_grace=config.limits.body_rate_grace,
            ),
            detailed_errors=self.dev_mode,
        )

        builtins: dict[str, Handler] = {
            "echo": EchoHandler(forwarder),
            "unavailable": unavailable,
            "invalid_backend": invalid_backend,
            "redirect": redirect,
        }
        compiler = RouteCompiler(
            self.plugins,
            forwarder,
            builtins,
            EndpointRegistry(),
            self.metrics,
            config.limits.max_body_size,
            config.paths.match,
        )
        watcher = RouteWatcher(compiler, self.holder, self.metrics)
        providers: list[Provider] = []
        if self.config_path is not None:
            self.file_provider = FileProvider(
                self.config_path,
                config,
                self._validate_reload,
                self.metrics,
                watch=config.file_provider.watch,
                interval=config.file_provider.interval,
            )
            watcher.publish(self.file_provider.initial_update())
            providers.append(self.file_provider)
        else:
            watcher.publish(ProviderUpdate("file", tuple(config.routes)))
        for _, plugin in self.plugins:
            providers.extend(plugin.providers())
        if self.routes_socket is not None:
            relay = RouteRelay(self.routes_socket)
            for update in await asyncio.wait_for(relay.connect(), 60):
                watcher.publish(update)
            providers.append(relay)
        watcher.apply_now()
        await self.stack.enter_async_context(self._provider_tasks(providers, watcher))
        # Providers that already have their state (plugins sync in start()) publish it in
        # their first step; apply it now, not after the debounce, so /readyz never says
        # ready with their routes missing.
        await asyncio.sleep(0)
        watcher.apply_now()

        self.admin_state = AdminState(self.holder, self.metrics, watcher)
        await self._start_admin(self.admin_state)

        self.admin_state.certificates = self.certificates
        entry = self._global_chain()
        for listener in listeners:
            await self._start_listener(listener, entry, trusted, access_log)
        # One drain for every listener: one deadline, not one grace after another.
        self.stack.push_async_callback(stop_serving, self._public_runners, config.drain.grace)
        self.admin_state.started = True
        logger.info(
            "listening on %s (admin on %s)",
            ", ".join(
                f"{'https' if spec.tls else 'http'}://{spec.listen.rpartition(':')[0]}:"
                f"{self.public_ports[spec.name]}"
                for spec in listeners
            ),
            self.admin_unix_path or f"{config.admin.listen.rpartition(':')[0]}:{self.admin_port}",
        )

    def _certificate_store(
        self, config: Config, listeners: list[ListenerSpec]
    ) -> CertificateStore | None:
        policies = {spec.name: policy(spec.tls) for spec in listeners if spec.tls is not None}
        if not policies:
            return None
        files = config.certificate_files()
        legacy = None if config.listeners or not files else file_source(files[-1])
        store = CertificateStore(
            policies=policies,
            default_name=config.tls.default_certificate,
            fallback_source=legacy,
            expiry_warning=config.tls.expiry_warning,
        )
        self.stack.callback(store.close)
        watcher = CertificateFileWatcher(store, files, config.tls.watch_interval)
        watcher.load_all()
        tasks = [asyncio.create_task(store.check_expiry_hourly(), name="certificate-expiry")]
        if files:
            tasks.append(asyncio.create_task(watcher.run(), name="certificate-files"))
        for task in tasks:
            self.stack.callback(task.cancel)
        self._handshakes = HandshakeCounts()
        self._tls_listeners = {
            name: TlsListener(name, store, make, self._handshakes)
            for name, make in policies.items()
        }
        for tls_listener in self._tls_listeners.values():
            rotation = asyncio.create_task(
                tls_listener.rotate_every(config.tls.session_ticket_lifetime),
                name=f"ticket-keys-{tls_listener.name}",
            )
            self.stack.callback(rotation.cancel)
        self.metrics.collectors.append(store.metric_lines)
        self.metrics.collectors.append(self._handshakes.metric_lines)
        return store

    async def _start_listener(
        self,
        spec: ListenerSpec,
        entry: Handler,
        trusted: TrustedPeers,
        access_log: AccessLog | None,
    ) -> None:
        config = self.config
        tls = spec.tls
        mutual = tls.client_certificates if tls is not None else None
        dispatcher = Dispatcher(
            self.holder,
            entry,
            scheme="https" if tls is not None else "http",
            trusted=trusted,
            metrics=self.metrics,
            access_log=access_log,
            merge_slashes=config.paths.merge_slashes,
            reject_encoded_slash=config.paths.reject_encoded_slash,
            reject_encoded_controls=config.paths.reject_encoded_controls,
            listener=spec.name,
            hsts=hsts_value(tls.hsts) if tls is not None and tls.hsts is not None else None,
            redirect_port=spec.https_redirect_port,
            mutual_tls=mutual is not None,
            subject_header=mutual.subject_header if mutual is not None else None,
            log_query=config.access_log.query == "redacted",
            track_requests=config.log.format == "json",
        )
        limits = config.limits
        tls_listener = self._tls_listeners.get(spec.name) if tls is not None else None
        make_server = tls_listener.server if tls_listener is not None else GuardedServer
        server = make_server(
            dispatcher,
            request_factory=request_factory(asyncio.get_running_loop(), self.drain_signal),
            header_timeout=limits.header_timeout,
            rejections=dispatcher.rejected,
            page=error_page,
            handler_cancellation=True,
            access_log=None,
            keepalive_timeout=limits.keepalive_timeout,
            max_line_size=limits.max_request_line,
            max_field_size=limits.max_header_size,
            max_headers=limits.max_headers,
        )
        self._servers.append(server)
        # stop_serving() waits out the grace; the runner's own shutdown finds nothing left.
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        self.stack.push_async_callback(runner.cleanup)
        self._public_runners.append(runner)
        host, port = split_host_port(spec.listen)
        site = web.TCPSite(
            runner,
            host or None,
            port,
            ssl_context=tls_listener.context if tls_listener is not None else None,
            reuse_port=self.reuse_port or None,
            backlog=1024,
        )
        await site.start()
        bound = _bound_port(runner, port)
        dispatcher.listen_port = str(bound)
        self.public_ports[spec.name] = bound
        if len(self._public_runners) == 1:
            self.public_port = bound

    def _global_chain(self) -> Handler:
        """The plugins' global middleware around the :class:`ChainEnd` with their reserved
        paths and prefixes: what every listener's dispatcher runs."""
        reserved: dict[str, Handler] = {}
        owners: dict[str, str] = {}
        for _, plugin in self.plugins:
            for path, handler in plugin.reserved_paths().items():
                problem = None
                if not path.startswith(RESERVED_PREFIXES):
                    problem = (
                        f"plugin {plugin.name!r} reserves {path!r}, outside "
                        f"{' and '.join(RESERVED_PREFIXES)}"
                    )
                elif path in owners:
                    problem = f"plugins {owners[path]!r} and {plugin.name!r} both reserve {path!r}"
                if problem is not None:
                    raise ConfigError(self.loaded.source, [ConfigIssue(("plugins",), problem)])
                owners[path] = plugin.name
                reserved[path] = isolate(plugin, _answer_with(handler), _unused, self.metrics)
        prefixes: dict[str, Handler] = {}
        for _, plugin in self.plugins:
            for prefix, handler in plugin.reserved_prefixes().items():
                problem = None
                if not prefix.startswith("/.commons-router/") or prefix.endswith("/"):
                    problem = (
                        f"plugin {plugin.name!r} reserves the prefix {prefix!r}: it must be "
                        "under /.commons-router/ and not end with '/'"
                    )
                else:
                    clash = [p for p in owners if p.startswith(prefix)]
                    clash += [p for p in prefixes if p.startswith(prefix) or prefix.startswith(p)]
                    if clash:
                        problem = f"plugin {plugin.name!r} reserves {prefix!r}, over {clash[0]!r}"
                if problem is not None:
                    raise ConfigError(self.loaded.source, [ConfigIssue(("plugins",), problem)])
                prefixes[prefix] = isolate(plugin, _answer_with(handler), _unused, self.metrics)
        entry: Handler = ChainEnd(reserved, prefixes, router_exception_handlers())
        global_plugins: list[str] = []
        for spec, plugin in reversed(self.plugins):
            middleware = plugin.global_middleware()
            if middleware is not None:
                entry = isolate(plugin, middleware, entry, self.metrics)
                global_plugins.append(spec.name)
        if self.admin_state is not None:
            self.admin_state.global_plugins = tuple(reversed(global_plugins))
        return entry

    async def _start_admin(self, state: AdminState) -> None:
        runner = web.AppRunner(build_admin_app(state), access_log=None)
        await runner.setup()
        self.stack.push_async_callback(runner.cleanup)
        site: web.BaseSite
        if self.admin_unix_path is not None:
            site = web.UnixSite(runner, self.admin_unix_path)
            await site.start()
            return
        host, port = split_host_port(self.config.admin.listen)
        site = web.TCPSite(runner, host or None, port)
        await site.start()
        self.admin_port = _bound_port(runner, port)

    def _validate_reload(self, loaded: LoadedConfig) -> list[ConfigIssue]:
        # Route plugin blocks are checked against the plugins running now: the plugin list
        # itself only changes on restart.
        specs = [spec for spec, _ in self.plugins]
        issues: list[ConfigIssue] = []
        for index, route in enumerate(loaded.config.routes):
            issues.extend(route_plugin_configs(route, specs, ("routes", index), loaded.line_map)[1])
        return issues

    @contextlib.asynccontextmanager
    async def _client_session(self) -> AsyncIterator[ClientSession]:
        connector = TCPConnector(
            limit=0, limit_per_host=0, keepalive_timeout=30.0, ttl_dns_cache=10
        )
        session = ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            timeout=ClientTimeout(total=None),
            raise_for_status=False,
        )
        try:
            yield session
        finally:
            await session.close()

    @contextlib.asynccontextmanager
    async def _provider_tasks(
        self, providers: list[Provider], watcher: RouteWatcher
    ) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(run_provider(provider, watcher.publish), name=provider.name)
            for provider in providers
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _current_endpoints(self) -> list[EndpointState]:
        return [
            endpoint
            for route in self.holder.table.routes
            if route.pool is not None
            for endpoint in route.pool.endpoints
        ]

    def reopen_logs(self) -> None:
        """SIGUSR1: reopen the access log file (after logrotate moved it)."""
        if self.access_log is not None:
            self.access_log.reopen()

    def request_reload(self) -> None:
        if self.file_provider is not None:
            self.file_provider.request_reload()

    async def drain(self) -> None:
        """SIGTERM: fail /readyz, keep serving for ``drain.delay``, then stop gracefully."""
        if self.admin_state is not None:
            self.admin_state.draining = True
        self.drain_signal.draining = True
        logger.info("draining: /readyz now fails; closing in %.1fs", self.config.drain.delay)
        await asyncio.sleep(self.config.drain.delay)
        await self.stop()

    async def stop(self) -> None:
        self.drain_signal.draining = True
        await self.stack.aclose()


async def _unused(request: web.BaseRequest) -> web.StreamResponse:
    raise AssertionError("a reserved path's handler answers itself")


def _answer_with(handler: Handler) -> Middleware:
    async def answer(request: web.BaseRequest, _next: Handler) -> web.StreamResponse:
        return await handler(request)

    return answer


def _bound_port(runner: web.BaseRunner, wanted: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return wanted
