"""The ``provenance`` plugin class: the signed header, the key set and the page."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import orjson
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from router.api import (
    ROUTER_IMAGE,
    DevOptions,
    DevPreset,
    Handler,
    Middleware,
    Plugin,
    PluginConfigError,
    PluginServices,
    ResponseHook,
    SignedStatementProfile,
    build_info,
    context_of,
    wants_json,
)
from router_plugins.contracts import TRACE_RESPONSE, TraceResponse
from router_plugins.provenance.fields import Record, RecordCache, RouterCode
from router_plugins.provenance.message import (
    merge_signatures,
    request_authority,
    request_path,
    strip_label,
)
from router_plugins.provenance.page import (
    CONTENT_SECURITY_POLICY,
    KEYS_PATH,
    PAGE_PATH,
    PageData,
    render_page,
)
from router_plugins.provenance.settings import (
    DEFAULT_HEADER,
    DEFAULT_LABEL,
    DEFAULT_TAG,
    ProvenanceConfig,
)
from router_plugins.provenance.signing import Signer, load_private_key, load_public_key, public_jwk
from router_plugins.provenance.source import SourceWatcher

logger = logging.getLogger("commons_router.plugin.provenance")


class ProvenancePlugin(Plugin[ProvenanceConfig]):
    name = "provenance"
    config_model = ProvenanceConfig
    signed_statement = SignedStatementProfile(
        header=DEFAULT_HEADER,
        label=DEFAULT_LABEL,
        tag=DEFAULT_TAG,
        keys_path=KEYS_PATH,
        required_components=("@status", '"@method";req', '"@authority";req', '"@path";req'),
        requested_components=(
            '"@status"',
            f'"{DEFAULT_HEADER.lower()}"',
            '"x-request-id"',
            '"@method";req',
            '"@authority";req',
            '"@path";req',
        ),
    )

    @classmethod
    def dev_preset(cls, options: DevOptions) -> DevPreset:
        return DevPreset(order=20, config={"source_dir": options.source} if options.source else {})

    def __init__(self, config: ProvenanceConfig, services: PluginServices) -> None:
        super().__init__(config, services)
        info = build_info()
        self.records = RecordCache(
            RouterCode(info.version, info.commit, info.dirty, ROUTER_IMAGE.digest), config.fields
        )
        ROUTER_IMAGE.subscribe(self.records.set_router_image)
        self.signer: Signer | None = None
        self.dev_key = False
        self.public_keys: list[Ed25519PublicKey] = []
        self.source = (
            SourceWatcher(config.source_dir, config.source_interval) if config.source_dir else None
        )
        self._jwks = b'{"keys":[]}'
        self._header_id = f'"{config.header.lower()}"'

    async def preflight(self) -> None:
        if self.config.sign != "never":
            await self._signing_key()
            self._retired_keys()

    def _retired_keys(self) -> list[Ed25519PublicKey]:
        keys = []
        for index, pem in enumerate(self.config.retired_public_keys):
            try:
                keys.append(load_public_key(pem.encode()))
            except ValueError as exc:
                raise PluginConfigError(str(exc), ("retired_public_keys", index)) from None
        return keys

    async def start(self) -> None:
        config = self.config
        if config.sign != "never":
            key = await self._signing_key()
            self.signer = Signer(key, config.label, config.tag)
            self.public_keys.append(key.public_key())
            self.public_keys.extend(self._retired_keys())
            jwks = {"keys": [public_jwk(key) for key in self.public_keys]}
            self._jwks = orjson.dumps(jwks, option=orjson.OPT_INDENT_2)
        if self.source is not None:
            await self.source.start()

    async def stop(self) -> None:
        if self.source is not None:
            await self.source.stop()

    async def _signing_key(self) -> Ed25519PrivateKey:
        config = self.config
        if config.key_file is not None:
            path = Path(config.key_file)
            try:
                pem = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                raise PluginConfigError(
                    f"cannot read {path}: {exc.strerror or exc}", ("key_file",)
                ) from None
            try:
                return load_private_key(pem)
            except ValueError as exc:
                raise PluginConfigError(f"{path}: {exc}", ("key_file",)) from None
        if config.key is not None:
            try:
                return load_private_key(config.key.encode())
            except ValueError as exc:
                raise PluginConfigError(str(exc), ("key",)) from None
        if not self.services.dev_mode:
            raise PluginConfigError(
                "signing needs an Ed25519 private key: set key_file or key "
                "(generate one with: openssl genpkey -algorithm ed25519), or sign: never",
                ("key_file",),
            )
        key = Ed25519PrivateKey.generate()
        self.dev_key = True
        logger.warning(
            "DEVELOPMENT MODE: provenance signatures use a key generated at start (kid %s); "
            "it lives only in memory and is gone when the router stops. Do not trust these "
            "signatures anywhere else.",
            public_jwk(key.public_key())["kid"],
        )
        return key

    # -- per request ---------------------------------------------------------------

    def _record(self, route: str | None, version: Mapping[str, str] | None) -> Record:
        if self.source is not None:
            version = self.source.version
        return self.records.get(route, version)

    def _record_of(self) -> Callable[[str | None, Mapping[str, str] | None], Record]:
        """The per-request record lookup (the cache's own, without a source directory)."""
        return self._record if self.source is not None else self.records.get

    def global_middleware(self) -> Middleware:
        trace = self.services.lookup(TRACE_RESPONSE)
        hook = self._make_hook(trace)
        record_of = self._record_of()

        async def provenance(request: web.BaseRequest, handler: Handler) -> web.StreamResponse:
            ctx = context_of(request)
            ctx.on_response(hook)
            response = await handler(request)
            # Logged here, not in the hook: a small response is sent after the access-log
            # line is written; the endpoint is known once the handler returned.
            route, endpoint = ctx.route, ctx.endpoint
            record = record_of(
                route.name if route is not None else None,
                endpoint.version if endpoint is not None else None,
            )
            ctx.add_log_field("provenance", record.fields)
            return response

        return provenance

    def _make_hook(self, trace: TraceResponse | None) -> ResponseHook:
        header = self.config.header
        header_id = self._header_id
        signer = self.signer
        label = self.config.label
        digest_limit = self.config.content_digest.max_size
        digest = self.config.content_digest.enabled
        only_requested = self.config.sign == "requested"
        record_of = self._record_of()
        now = time.time
        # The covered component ids for each combination of optional components
        # (traceresponse, content-digest), joined once.
        ids: dict[tuple[bool, bool], str] = {}
        for traced in (False, True):
            for digested in (False, True):
                covered = ['"@status"', header_id, '"x-request-id"']
                if traced:
                    covered.append('"traceresponse"')
                if digested:
                    covered.append('"content-digest"')
                covered += ['"@method";req', '"@authority";req', '"@path";req']
                ids[traced, digested] = " ".join(covered)

        def add_provenance(request: web.BaseRequest, response: web.StreamResponse) -> None:
            ctx = context_of(request)
            route = ctx.route
            endpoint = ctx.endpoint
            record = record_of(
                route.name if route is not None else None,
                endpoint.version if endpoint is not None else None,
            )
            headers = response.headers
            headers[header] = record.header
            if signer is None or (only_requested and "Accept-Signature" not in request.headers):
                if "Signature-Input" in headers or "Signature" in headers:
                    strip_label(headers, label)
                return
            request_id = ctx.request_id
            headers["X-Request-Id"] = request_id
            # The RFC 9421 signature base, component lines in the order of ``ids``.
            lines = (
                f'"@status": {response.status}\n{header_id}: {record.header}\n'
                f'"x-request-id": {request_id}\n'
            )
            traced = False
            if trace is not None:
                value = trace.traceresponse(request)
                if value:
                    headers["traceresponse"] = value
                    lines += f'"traceresponse": {value}\n'
                    traced = True
            method = request.method
            digested = False
            if digest and method != "HEAD" and isinstance(response, web.Response):
                body = response.body
                if isinstance(body, bytes | bytearray) and len(body) <= digest_limit:
                    value = f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"
                    headers["Content-Digest"] = value
                    lines += f'"content-digest": {value}\n'
                    digested = True
            lines += (
                f'"@method";req: {method}\n'
                f'"@authority";req: {request_authority(request, ctx.scheme)}\n'
                f'"@path";req: {request_path(request, ctx.path)}\n'
            )
            signature_input, signature = signer.sign_lines(ids[traced, digested], lines, int(now()))
            if "Signature-Input" in headers or "Signature" in headers:
                merge_signatures(headers, label, signature_input, signature)
            else:
                headers["Signature-Input"] = signature_input
                headers["Signature"] = signature

        return add_provenance

    # -- reserved paths -------------------------------------------------------------

    def reserved_paths(self) -> Mapping[str, Handler]:
        paths: dict[str, Handler] = {KEYS_PATH: self._keys}
        if self.config.page:
            paths[PAGE_PATH] = self._page
        return paths

    async def _keys(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(
            body=self._jwks,
            content_type="application/jwk-set+json",
            headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
        )

    def covered_components(self, tracing: bool) -> list[str]:
        covered = ["@status", self.config.header.lower(), "x-request-id"]
        if tracing:
            covered.append("traceresponse")
        if self.config.content_digest.enabled:
            covered.append("content-digest (small buffered bodies)")
        covered += ['"@method";req', '"@authority";req', '"@path";req']
        return covered

    async def _page(self, request: web.BaseRequest) -> web.StreamResponse:
        ctx = context_of(request)
        route = ctx.route
        name = route.name if route is not None else None
        endpoints: list[Record] = []
        if self.source is not None:
            endpoints.append(self._record(name, None))
        elif route is not None:
            seen: set[str] = set()
            for endpoint in route.endpoints:
                record = self.records.get(name, endpoint.version)
                if record.header not in seen:
                    seen.add(record.header)
                    endpoints.append(record)
        router = self.records.get(None, None)
        trace = self.services.lookup(TRACE_RESPONSE)
        tracing = trace is not None
        traceresponse = trace.traceresponse(request) if trace is not None else None
        headers = {
            "Cache-Control": "no-store",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        if wants_json(request):
            document = {
                "host": ctx.host,
                "route": name,
                "router": {
                    "version": router.fields["router"],
                    "commit": router.fields["router-commit"],
                },
                "endpoints": [record.fields for record in endpoints],
                "signature": None
                if self.signer is None
                else {
                    "label": self.config.label,
                    "keyid": self.signer.keyid,
                    "algorithm": "ed25519",
                    "covered": self.covered_components(tracing),
                    "keys": KEYS_PATH,
                    "development_key": self.dev_key,
                    "when": self.config.sign,
                },
            }
            return web.Response(
                body=orjson.dumps(document), content_type="application/json", headers=headers
            )
        page = render_page(
            PageData(
                host=ctx.host,
                origin=f"{ctx.scheme}://{request.headers.get('Host', ctx.host)}",
                route=name,
                router=router,
                endpoints=endpoints,
                header=self.config.header,
                label=self.config.label,
                keyid=self.signer.keyid if self.signer is not None else None,
                covered=self.covered_components(tracing),
                request_id=ctx.request_id,
                trace_id=traceresponse.split("-")[1] if traceresponse else None,
                dev_key=self.dev_key,
                on_request=self.config.sign == "requested",
            )
        )
        return web.Response(text=page, content_type="text/html", headers=headers)
