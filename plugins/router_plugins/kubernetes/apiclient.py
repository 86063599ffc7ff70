"""The Kubernetes API calls the plugin makes: list pages and watch streams (the routes),
and small JSON reads and writes (the Lease and Ingress status)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from aiohttp import ClientResponse, ClientSession, ClientTimeout

from router_plugins.kubernetes.credentials import Credentials
from router_plugins.kubernetes.objects import Obj, mapping, text

MAX_EVENT_BYTES = 32 * 1024 * 1024
"""Largest watch event line accepted (Kubernetes objects are at most a few MiB)."""
MAX_ERROR_BYTES = 64 * 1024


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class Expired(ApiError):
    """410 Gone / Expired: the resource version is too old; relist."""


def status_error(status: Obj, http_status: int = 0) -> ApiError:
    """An ApiError from a ``Status`` object (in a response body or an ERROR event)."""
    code = status.get("code")
    code = code if isinstance(code, int) else http_status
    reason = text(status.get("reason"))
    message = text(status.get("message")) or reason or "no message"
    if code == 410 or reason in ("Expired", "Gone"):
        return Expired(410, message)
    return ApiError(code, message)


class KubeApi:
    def __init__(self, session: ClientSession, credentials: Credentials) -> None:
        self._session = session
        self._credentials = credentials

    async def _request(
        self, path: str, params: Mapping[str, str], client_timeout: ClientTimeout
    ) -> ClientResponse:
        headers = {"Accept": "application/json"}
        token = await self._credentials.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await self._session.get(
            self._credentials.server + path,
            params=params,
            headers=headers,
            ssl=self._credentials.ssl,
            timeout=client_timeout,
            allow_redirects=False,
        )
        if response.status != 200:
            try:
                body = await response.content.read(MAX_ERROR_BYTES)
            finally:
                response.release()
            if response.status == 401:
                self._credentials.invalidate()
            try:
                status = mapping(orjson.loads(body))
            except orjson.JSONDecodeError:
                status = {"message": body[:200].decode("utf-8", "replace")}
            raise status_error(status, response.status)
        return response

    async def call(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        *,
        content_type: str = "application/json",
        deadline: float = 10.0,
    ) -> dict[str, Any]:
        """One JSON request (get, create, update, patch); the answer's object. Raises
        ApiError (its ``status`` is the HTTP status: 404, 409, ...)."""
        headers = {"Accept": "application/json"}
        token = await self._credentials.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)
        async with self._session.request(
            method,
            self._credentials.server + path,
            data=data,
            headers=headers,
            ssl=self._credentials.ssl,
            timeout=ClientTimeout(total=deadline),
            allow_redirects=False,
        ) as response:
            raw = await response.content.read(MAX_EVENT_BYTES)
            if response.status == 401:
                self._credentials.invalidate()
            try:
                document = mapping(orjson.loads(raw))
            except orjson.JSONDecodeError:
                document = {"message": raw[:200].decode("utf-8", "replace")}
            if not 200 <= response.status < 300:
                raise status_error(document, response.status)
            return dict(document)

    async def list_page(
        self, path: str, params: Mapping[str, str], deadline: float
    ) -> dict[str, Any]:
        response = await self._request(path, params, ClientTimeout(total=deadline))
        try:
            document = orjson.loads(await response.read())
        except orjson.JSONDecodeError as exc:
            raise ApiError(0, f"list answer is not JSON: {exc}") from None
        finally:
            response.release()
        if not isinstance(document, dict):
            raise ApiError(0, "list answer is not a JSON object")
        return document

    async def watch(
        self, path: str, params: Mapping[str, str], idle_timeout: float
    ) -> AsyncIterator[Obj]:
        """Watch events until the server ends the stream (normally at timeoutSeconds)."""
        response = await self._request(
            path, params, ClientTimeout(total=None, sock_connect=10, sock_read=idle_timeout)
        )
        try:
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while True:
                    newline = buffer.find(b"\n")
                    if newline < 0:
                        break
                    line, buffer = buffer[:newline], buffer[newline + 1 :]
                    if line.strip():
                        yield _event(line)
                if len(buffer) > MAX_EVENT_BYTES:
                    raise ApiError(0, "watch event larger than 32 MiB")
            if buffer.strip():
                yield _event(buffer)
        finally:
            response.release()


def _event(line: bytes) -> Obj:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ApiError(0, f"watch event is not JSON: {exc}") from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise ApiError(0, "watch event without an object")
    return event
