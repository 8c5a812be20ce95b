"""Hostile and unusual clients on a real socket: strict parsing answers 400 without
a traceback, slow senders get 408, early 413 answers reach the standard library's client
(lingering close), and fuzzed requests (Hypothesis, bounded) each get an answer or a clean
close while another keep-alive connection keeps being served. ~15 s."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvnode.transport.http_server import (
    BodyTooLarge,
    HttpServer,
    Reply,
    Request,
    SlowSenderLimits,
    json_reply,
)

pytestmark = pytest.mark.dataplane

MAX_BODY = 1536 * 1024  # the node's default value limit


async def _echo(request: Request) -> Reply:
    try:
        body = await request.read()
    except BodyTooLarge:
        return json_reply(413, {"error": "value_too_large", "message": "over the limit"})
    return json_reply(200, {"path": request.path, "len": len(body)})


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record) + (" (traceback)" if record.exc_info else ""))


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, _Errors]]:
    """An HttpServer on 127.0.0.1 in its own thread and loop, and the warnings it logs."""
    errors = _Errors()
    for name in ("kvnode.http", "asyncio"):
        logging.getLogger(name).addHandler(errors)
    loop = asyncio.new_event_loop()
    limits = SlowSenderLimits(header_timeout=0.5, body_timeout=0.5, linger_time=5, linger_timeout=1)
    http_server = HttpServer(_echo, max_body=MAX_BODY, limits=limits)
    listener = loop.run_until_complete(loop.create_server(http_server.protocol, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield listener.sockets[0].getsockname()[1], errors
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        for name in ("kvnode.http", "asyncio"):
            logging.getLogger(name).removeHandler(errors)


def _exchange(port: int, data: bytes, timeout: float = 5, keep_alive_ok: bool = False) -> bytes:
    """Send `data`, return everything until the server closes (a reset fails the test). With
    `keep_alive_ok`, an answer after which the connection stays quiet for 1 s also ends it
    (a well-formed request is answered and kept alive)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            s.settimeout(1.0 if keep_alive_ok and out.startswith(b"HTTP/1.1 ") else timeout)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if keep_alive_ok and out:
                    return out
                raise
            if not chunk:
                return out
            out += chunk


def test_content_length_with_a_non_ascii_digit_gets_400_and_no_traceback(
    server: tuple[int, _Errors],
) -> None:
    port, errors = server
    before = len(errors.records)
    for head in (
        "PUT /k HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode(),
        b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x10\r\n",
        b"PUT /k HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    ):
        answer = _exchange(port, head)
        assert answer.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in answer, answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "bad_request"
    assert errors.records[before:] == []


def test_a_16_mib_put_gets_its_413_through_the_standard_library_clients(
    server: tuple[int, _Errors],
) -> None:
    port, _ = server
    body = b"x" * (16 << 20)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("PUT", "/v1/kv/big", body=body)
    resp = conn.getresponse()
    assert resp.status == 413 and resp.getheader("Connection") == "close"
    assert json.loads(resp.read())["error"] == "value_too_large"
    conn.close()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/kv/big", data=body, method="PUT")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 413 and json.loads(err.value.read())["error"] == "value_too_large"
    # chunked over the limit: the 413 comes as soon as the limit is passed
    chunk = b"y" * (1 << 20)
    stream = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
    answer = _exchange(port, b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + stream)
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_slow_senders_get_408_and_are_closed(server: tuple[int, _Errors]) -> None:
    port, _ = server
    with socket.create_connection(
        ("127.0.0.1", port), timeout=5
    ) as s:  # a head, one line at a time
        s.sendall(b"GET /slow HTTP/1.1\r\n")
        start = time.monotonic()
        answer = b""
        while not answer and time.monotonic() - start < 4:
            try:
                s.sendall(b"X-Trickle: 1\r\n")
                s.settimeout(0.2)
                answer = s.recv(4096)
            except TimeoutError:
                continue
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert time.monotonic() - start < 3, "the head timeout (0.5 s) bounds a trickling head"
    answer = _exchange(
        port, b"PUT /stalled HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"
    )  # then nothing
    assert answer.startswith(b"HTTP/1.1 408 ") and b"body" in answer


_VALID = [
    b"GET /v1/kv/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"PUT /v1/kv/b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"PUT /v1/kv/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        blob = draw(
            st.binary(min_size=1, max_size=8)
            | st.sampled_from(
                [
                    b"\xc2\xb2",
                    b"\r\n",
                    b"\x00",
                    b":",
                    b" ",
                    b"0x",
                    b"+",
                    b"ffffffffffffffffff",
                    b"\r\n\r\n",
                ]
            )
        )
        if action == "insert":
            data[pos:pos] = blob
        elif action == "delete":
            del data[pos : pos + len(blob)]
        else:
            data[pos : pos + len(blob)] = blob
    return bytes(data)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(_mutated())
def test_fuzzed_requests_get_an_answer_or_a_clean_close(
    server: tuple[int, _Errors], request_bytes: bytes
) -> None:
    port, errors = server
    before = len(errors.records)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as good:
        # ended, so no head waits for more; a well-formed request is answered and kept alive
        answer = _exchange(port, request_bytes + b"\r\n\r\n", keep_alive_ok=True)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 "), answer[:80]
        parts = answer.split(b"HTTP/1.1 ")[1:]
        statuses = [int(part[:3]) for part in parts if part[:3].isdigit()]
        allowed = (200, 400, 404, 408, 413, 414, 431)
        assert all(status in allowed for status in statuses), answer[:200]
        good.sendall(b"GET /still-served HTTP/1.1\r\n\r\n")  # another connection is unaffected
        assert good.recv(4096).startswith(b"HTTP/1.1 200 ")
    assert errors.records[before:] == []
