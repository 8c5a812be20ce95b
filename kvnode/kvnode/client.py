"""A small keep-alive HTTP/1.1 client on an asyncio Protocol, for `kvtrace kv` and the bench.

Deliberately minimal (no aiohttp, no streams): the load generator shares the machine with the
nodes it measures, so its own cost per request must stay small (~10 µs of CPU here, against
~30 µs with asyncio streams and ~60 µs with aiohttp's client).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def version(self) -> str | None:
        return self.headers.get("x-kv-version")

    def json(self) -> object:
        return json.loads(self.body)


class ClientError(Exception):
    pass


def split_endpoint(endpoint: str) -> tuple[str, int]:
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if not url.hostname:
        raise ClientError(f"invalid endpoint {endpoint!r}")
    return url.hostname, url.port or 7070


@dataclass(frozen=True)
class Security:
    """How a client reaches a secured cluster (docs/security.md, "The KV cluster"):
    ``ca_file`` the CA bundle that verifies the nodes (https endpoints), ``token`` the bearer
    token, ``server_name`` the name to verify instead of the endpoint's host."""

    ca_file: str | None = None
    token: str | None = None
    server_name: str | None = None

    def context(self) -> ssl.SSLContext:
        return _context(self.ca_file)

    def headers(self) -> str:
        return f"Authorization: Bearer {self.token}\r\n" if self.token else ""


@functools.lru_cache(maxsize=8)
def _context(ca_file: str | None) -> ssl.SSLContext:
    """One context per bundle (loading it costs a millisecond; the bench opens many connections)."""
    return ssl.create_default_context(cafile=ca_file)


ENV_CA_FILE, ENV_TOKEN, ENV_TOKEN_FILE, ENV_SERVER_NAME = (
    "KVTRACE_KV_CA_FILE",
    "KVTRACE_KV_TOKEN",
    "KVTRACE_KV_TOKEN_FILE",
    "KVTRACE_KV_SERVER_NAME",
)


def security_from(
    ca_file: str | None,
    token_file: str | None,
    server_name: str | None,
    env: Mapping[str, str] = os.environ,
) -> Security:
    """The flags, else the KVTRACE_KV_* variables; the token from ``token_file`` or
    KVTRACE_KV_TOKEN (never a flag: it would show in the process list). Raises ClientError
    naming the flag when the token file cannot be read or holds no token."""
    token = env.get(ENV_TOKEN) or None
    path = token_file or env.get(ENV_TOKEN_FILE)
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise ClientError(f"--token-file {path}: {exc.strerror or exc}") from None
        if not token or any(ch.isspace() for ch in token):
            raise ClientError(
                f"--token-file {path}: expected one token, got {'nothing' if not token else 'spaces'}"
            )
    return Security(
        ca_file or env.get(ENV_CA_FILE) or None,
        token,
        server_name or env.get(ENV_SERVER_NAME) or None,
    )


def parse_response(buf: bytearray, eof: bool = False) -> Response | None:
    """Remove and return one complete response from the front of `buf`, or None if more
    bytes are needed. With `eof`, a body without a length ends with the connection."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if eof:
            raise ValueError("connection closed before the response head")
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    pos = end + 4
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunked = _chunked_body(buf, pos)
        if chunked is None:
            if eof:
                raise ValueError("connection closed inside a chunked body")
            return None
        body, pos = chunked
    elif 100 <= status < 200:  # an interim answer (e.g. 100 Continue): skip it
        del buf[:pos]
        return parse_response(buf, eof)
    elif "content-length" in headers or status in (204, 304):
        length = int(headers.get("content-length", "0"))
        if len(buf) < pos + length:
            if eof:
                raise ValueError("connection closed inside the body")
            return None
        body = bytes(buf[pos : pos + length])
        pos += length
    elif eof:  # delimited by the end of the connection
        body = bytes(buf[pos:])
        pos = len(buf)
    else:
        return None
    del buf[:pos]
    return Response(status, headers, body)


def _chunked_body(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0].strip(), 16)
        pos = eol + 2
        if size == 0:
            while True:  # trailers, up to an empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                blank = eol == pos
                pos = eol + 2
                if blank:
                    return b"".join(parts), pos
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            try:
                response = parse_response(self.buf)
            except ValueError as exc:
                self.waiter.set_exception(exc)
                return
            if response is not None:
                self.waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            try:
                response = parse_response(self.buf, eof=True)
                assert response is not None
                self.waiter.set_result(response)
            except ValueError as err:
                self.waiter.set_exception(ConnectionResetError(str(err)))


class Connection:
    """One keep-alive connection; requests on it are sequential."""

    def __init__(self, endpoint: str, timeout: float = 10.0, security: Security = Security()):
        self.host, self.port = split_endpoint(endpoint)
        self.timeout = timeout
        self._proto: _Protocol | None = None
        self._tls = security.context() if endpoint.startswith("https://") else None
        self._server_name = security.server_name or self.host
        self._auth = security.headers()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Response:
        try:
            async with asyncio.timeout(self.timeout):  # no extra task per request, unlike wait_for
                return await self._request(method, path, body, headers)
        except (TimeoutError, OSError, ValueError) as exc:
            self.close()
            raise ClientError(
                f"{method} {self.host}:{self.port}{path.split('?')[0][:60]}: {type(exc).__name__} {exc}"
            ) from None

    async def _request(
        self, method: str, path: str, body: bytes, headers: dict[str, str] | None
    ) -> Response:
        proto = self._proto
        loop = asyncio.get_running_loop()
        if proto is None or proto.closed or proto.transport is None or proto.transport.is_closing():
            if self._tls is None:
                _, proto = await loop.create_connection(_Protocol, self.host, self.port)
            else:
                _, proto = await loop.create_connection(
                    _Protocol,
                    self.host,
                    self.port,
                    ssl=self._tls,
                    server_hostname=self._server_name,
                )
            self._proto = proto
        assert proto.transport is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n{self._auth}"
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        proto.buf.clear()
        waiter = proto.waiter = loop.create_future()
        proto.transport.write(head.encode("latin-1") + b"\r\n" + body)
        response: Response = await waiter
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        return response

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


def kv_path(key: str, consistency: str | None = None) -> str:
    path = "/v1/kv/" + quote(key, safe="")
    return f"{path}?consistency={consistency}" if consistency else path


class KVClient:
    def __init__(self, endpoint: str, timeout: float = 10.0, security: Security = Security()):
        self.conn = Connection(endpoint, timeout, security)

    async def put(self, key: str, value: bytes, consistency: str | None = None) -> Response:
        return await self.conn.request("PUT", kv_path(key, consistency), value)

    async def get(self, key: str, consistency: str | None = None) -> Response:
        return await self.conn.request("GET", kv_path(key, consistency))

    async def delete(self, key: str, consistency: str | None = None) -> Response:
        return await self.conn.request("DELETE", kv_path(key, consistency))

    def close(self) -> None:
        self.conn.close()
