"""A small keep-alive HTTP/1.1 client on asyncio streams, for `kvtrace kv` and the bench.

Deliberately minimal (no aiohttp): the load generator shares the machine with the nodes it
measures, so its own cost per request must stay small.
"""

from __future__ import annotations

import asyncio
import json
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


class Connection:
    """One keep-alive connection; requests on it are sequential."""

    def __init__(self, endpoint: str, timeout: float = 10.0):
        self.host, self.port = split_endpoint(endpoint)
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Response:
        try:
            async with asyncio.timeout(self.timeout):  # no extra task per request, unlike wait_for
                return await self._request(method, path, body, headers)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
            self.close()
            raise ClientError(f"{method} {self.host}:{self.port}{path.split('?')[0][:60]}: {type(exc).__name__} {exc}") from None

    async def _request(self, method: str, path: str, body: bytes, headers: dict[str, str] | None) -> Response:
        if self._writer is None or self._writer.is_closing():
            await self._open()
        assert self._reader is not None and self._writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._writer.write(head.encode("latin-1") + b"\r\n" + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            data = await self._read_chunked()
        else:
            data = await self._reader.readexactly(int(hdrs.get("content-length", "0")))
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return Response(status, hdrs, data)

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = self._reader = None


def kv_path(key: str, consistency: str | None = None) -> str:
    path = "/v1/kv/" + quote(key, safe="")
    return f"{path}?consistency={consistency}" if consistency else path


class KVClient:
    def __init__(self, endpoint: str, timeout: float = 10.0):
        self.conn = Connection(endpoint, timeout)

    async def put(self, key: str, value: bytes, consistency: str | None = None) -> Response:
        return await self.conn.request("PUT", kv_path(key, consistency), value)

    async def get(self, key: str, consistency: str | None = None) -> Response:
        return await self.conn.request("GET", kv_path(key, consistency))

    async def delete(self, key: str, consistency: str | None = None) -> Response:
        return await self.conn.request("DELETE", kv_path(key, consistency))

    def close(self) -> None:
        self.conn.close()
