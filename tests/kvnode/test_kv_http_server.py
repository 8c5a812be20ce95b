"""HTTP/1.1 on the client port: the lean server (head parsing, behaviour on a real socket) and
the response parsing of the load generator's client."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable

import pytest

from kvnode.client import parse_response
from kvnode.transport.http_server import (
    BadRequest,
    BodyTooLarge,
    HttpServer,
    Reply,
    Request,
    json_reply,
    parse_head,
)


@pytest.mark.unit
def test_parse_head_decodes_the_path_and_lowercases_headers() -> None:
    head = b"PUT /v1/kv/a%2Fb%20%C3%A9?consistency=all&x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3"
    method, path, query, headers, http11 = parse_head(head, 8190)
    assert (method, path, query, http11) == ("PUT", "/v1/kv/a/b é", "consistency=all&x=1", True)
    assert headers == {"host": "h", "x-a": "1, 2", "content-length": "3"}
    assert parse_head(b"GET / HTTP/1.0", 100)[4] is False


@pytest.mark.unit
@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /x", 400),
        (b"GET x HTTP/1.1", 400),
        (b"GET / HTTP/2.0", 400),
        (b"GET / HTTP/1.1\r\nno colon", 400),
        (b"GET / HTTP/1.1\r\n Folded: x", 400),
        (b"GET /%FF HTTP/1.1", 400),
        (b"GET /" + b"a" * 200 + b" HTTP/1.1", 414),
    ],
)
def test_parse_head_rejects_malformed_heads(head: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as err:
        parse_head(head, 100)
    assert err.value.status == status


async def _echo(request: Request) -> Reply:
    if request.path == "/slow":
        await asyncio.sleep(0.2)
    try:
        body = await request.read()
    except BodyTooLarge:
        return json_reply(413, {"error": "value_too_large"})
    return json_reply(
        200, {"path": request.path, "len": len(body), "consistency": request.query("consistency")}
    )


def _serve(
    handler: Callable[[Request], Awaitable[Reply]],
    exchange: Callable[[int], object],
    max_body: int = 100,
) -> object:
    """Run the server on 127.0.0.1 in a thread's loop while `exchange(port)` talks to it."""

    async def main() -> object:
        server = HttpServer(handler, max_body=max_body, max_line=200)
        listener = await asyncio.get_running_loop().create_server(server.protocol, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            return await asyncio.wait_for(asyncio.to_thread(exchange, port), 20)
        finally:
            listener.close()
            await server.shutdown(1)

    return asyncio.run(main())


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    sock.settimeout(5)
    data = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(data) < length:
            data += sock.recv(65536)
        out.append((int(lines[0].split(" ")[1]), headers, data[:length]))
        data = data[length:]
    return out


@pytest.mark.dataplane
def test_keep_alive_pipelining_chunked_bodies_and_expect_continue() -> None:
    def exchange(port: int) -> list[tuple[int, dict[str, str], bytes]]:
        with socket.create_connection(("127.0.0.1", port)) as s:
            # three pipelined requests, the first slow: answers come back in order
            s.sendall(
                b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                b"PUT /b?consistency=one HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n"
            )
            out = _read_responses(s, 3)
            s.sendall(b"PUT /d HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
            s.settimeout(5)
            interim = s.recv(100)
            s.sendall(b"data")
            out += _read_responses(s, 1)
            out.append((0, {}, interim))
            return out

    responses = _serve(_echo, exchange)
    assert isinstance(responses, list)
    docs = [json.loads(body) for status, _, body in responses[:4]]
    assert [status for status, _, _ in responses[:4]] == [200, 200, 200, 200]
    assert docs == [
        {"path": "/slow", "len": 0, "consistency": None},
        {"path": "/b", "len": 5, "consistency": "one"},
        {"path": "/c", "len": 5, "consistency": None},
        {"path": "/d", "len": 4, "consistency": None},
    ]
    assert responses[0][1]["content-type"] == "application/json" and "date" in responses[0][1]
    assert responses[4][2] == b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.dataplane
def test_oversized_bodies_and_garbage_get_errors_and_the_server_keeps_serving() -> None:
    def exchange(port: int) -> list[tuple[int, dict[str, str], bytes]]:
        out = []
        with socket.create_connection(
            ("127.0.0.1", port)
        ) as s:  # over the limit, then the connection is reused
            s.sendall(
                b"PUT /big HTTP/1.1\r\nContent-Length: 150\r\n\r\n"
                + b"x" * 150
                + b"GET /after HTTP/1.1\r\n\r\n"
            )
            out += _read_responses(s, 2)
        with socket.create_connection(
            ("127.0.0.1", port)
        ) as s:  # over the limit, announced: no 100, an answer, closed
            s.sendall(b"PUT /big HTTP/1.1\r\nContent-Length: 150\r\nExpect: 100-continue\r\n\r\n")
            out += _read_responses(s, 1)
            assert s.recv(10) == b""
        with socket.create_connection(("127.0.0.1", port)) as s:  # chunked over the limit
            s.sendall(
                b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n80\r\n"
                + b"y" * 128
                + b"\r\n0\r\n\r\n"
            )
            out += _read_responses(s, 1)
        for garbage in (
            b"NOT HTTP\r\n\r\n",
            b"PUT /x HTTP/1.1\r\nContent-Length: many\r\n\r\n",
            b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n",
        ):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(garbage)
                out += _read_responses(s, 1)
                assert s.recv(10) == b"", "the connection is closed after a malformed request"
        with socket.create_connection(("127.0.0.1", port)) as s:  # HTTP/1.0 closes after the answer
            s.sendall(b"GET /old HTTP/1.0\r\n\r\n")
            out += _read_responses(s, 1)
            assert s.recv(10) == b""
        return out

    responses = _serve(_echo, exchange)
    assert isinstance(responses, list)
    assert [status for status, _, _ in responses] == [413, 200, 413, 413, 400, 400, 400, 414, 200]
    assert json.loads(responses[1][2])["path"] == "/after"
    assert all(json.loads(body)["error"] for status, _, body in responses if status >= 400)
    assert responses[-1][1]["connection"] == "close"


@pytest.mark.dataplane
def test_shutdown_lets_an_in_flight_request_answer() -> None:
    async def main() -> tuple[int, dict[str, str], bytes]:
        server = HttpServer(_echo, max_body=100)
        listener = await asyncio.get_running_loop().create_server(server.protocol, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /slow HTTP/1.1\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        listener.close()
        await server.shutdown(5)
        raw = await asyncio.wait_for(reader.read(), 5)  # the answer, then EOF
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        return (
            int(lines[0].split(" ")[1]),
            {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])},
            body,
        )

    status, headers, body = asyncio.run(main())
    assert (
        status == 200 and headers["connection"] == "close" and json.loads(body)["path"] == "/slow"
    )


@pytest.mark.unit
def test_client_parses_length_chunked_interim_and_close_delimited_responses() -> None:
    buf = bytearray(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-KV-Version: 7\r\n\r\nabc"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2;x=y\r\nhe\r\n3\r\nllo\r\n0\r\nTrailer: t\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart"
    )
    first = parse_response(buf)
    assert first is not None and (first.status, first.version, first.body) == (200, "7", b"abc")
    second = parse_response(buf)
    assert second is not None and (second.status, second.body) == (204, b"")
    third = parse_response(buf)
    assert third is not None and (third.status, third.body) == (200, b"hello")
    assert parse_response(buf) is None, "an incomplete body waits for more bytes"
    with pytest.raises(ValueError):
        parse_response(buf, eof=True)
    closing = bytearray(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
    assert parse_response(closing) is None
    done = parse_response(closing, eof=True)
    assert done is not None and done.body == b"until the end" and closing == bytearray()


@pytest.mark.dataplane
def test_idle_and_stalled_connections_are_closed_after_the_idle_timeout() -> None:
    async def main() -> list[bytes]:
        server = HttpServer(_echo, max_body=100, idle_timeout=0.4)
        listener = await asyncio.get_running_loop().create_server(server.protocol, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            streams[1][1].write(b"GET /half-a-head HTTP/1.1\r\n")  # stalls inside its head
            streams[2][1].write(b"GET /slow HTTP/1.1\r\n\r\n")  # answered, then idle
            return [await asyncio.wait_for(reader.read(), 10) for reader, _ in streams]
        finally:
            listener.close()
            await server.shutdown(1)

    idle, stalled, answered = asyncio.run(main())
    assert idle == b"" and stalled == b"", "closed without an answer"
    assert answered.startswith(b"HTTP/1.1 200 OK") and answered.endswith(b'"consistency": null}')
