"""The client port's strict HTTP/1.1 parsing (kvnode.transport.http_parse): a table of the
hostile inputs a public port meets, and Hypothesis fuzzing (bounded) of every parsing function."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvnode.transport.http_parse import (
    MAX_HEADERS,
    BadRequest,
    check_trailer,
    chunk_size,
    content_length,
    parse_head,
)

pytestmark = pytest.mark.unit

FUZZ = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _status(fn: object, *args: object) -> int:
    with pytest.raises(BadRequest) as err:
        fn(*args)  # type: ignore[operator]
    assert str(err.value), "every refusal says what is wrong"
    return err.value.status


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /k HTTP/1.1\r\nContent-Length: 5" + "\u00b2".encode(), 400),  # non-ASCII anywhere
        ("GET /caf\u00e9 HTTP/1.1".encode(), 400),  # a raw UTF-8 path (percent-encode it)
        (b"GET /k HTTP/1.2", 400),
        (b"GET /k HTTP/1.1 extra", 400),
        (b"G(T /k HTTP/1.1", 400),  # the method is a token
        (b"GET /a\x01b HTTP/1.1", 400),  # control characters in the target
        (b"GET /k HTTP/1.1\r\nBad Name: x", 400),
        (b"GET /k HTTP/1.1\r\nX: a\x00b", 400),
        (b"GET /k HTTP/1.1\r\n: no name", 400),
        (b"GET /k HTTP/1.1" + b"\r\nX: y" * (MAX_HEADERS + 1), 431),
        (b"GET /k HTTP/1.1\r\nX: " + b"y" * 300, 431),
    ],
)
def test_malformed_heads_are_refused_with_the_status_to_answer(head: bytes, status: int) -> None:
    assert _status(parse_head, head, 200) == status


def test_a_well_formed_head_with_tabs_and_percent_encoded_utf8_parses() -> None:
    method, path, query, headers, http11 = parse_head(
        b"PUT /v1/kv/caf%C3%A9?consistency=one HTTP/1.0\r\nX-A:\t spaced \t\r\nx-a: 2", 200
    )
    assert (method, path, query, headers, http11) == (
        "PUT",
        "/v1/kv/caf\u00e9",
        "consistency=one",
        {"x-a": "spaced, 2"},
        False,
    )


@pytest.mark.parametrize(
    "text", ["\u00b2", "+5", "-1", " 5", "5 ", "0x10", "1_0", "1e3", "5, 5", "", "9" * 19, "\uff15"]
)
def test_content_length_is_ascii_digits_only(text: str) -> None:
    assert _status(content_length, {"content-length": text}) == 400


def test_content_length_and_transfer_encoding_together_are_refused() -> None:
    assert content_length({"content-length": "12"}) == 12 and content_length({}) is None
    assert _status(content_length, {"content-length": "3", "transfer-encoding": "chunked"}) == 400


@pytest.mark.parametrize(
    "line", [b"0x10", b"1_0", b"+5", b"-5", b" 5", b"", b"g", b"1" * 17, b"\xb2", b"5 x"]
)
def test_chunk_sizes_are_hex_digits_only(line: bytes) -> None:
    assert _status(chunk_size, line) == 400


def test_trailer_lines_are_header_lines_within_bounds() -> None:
    check_trailer(b"X-Checksum: abc", 200, 1)
    assert _status(check_trailer, b"\n", 200, 1) == 400  # a bare LF (found by the socket fuzzing)
    assert _status(check_trailer, b"no colon", 200, 1) == 400
    assert _status(check_trailer, b"X: " + b"y" * 300, 200, 1) == 431
    assert _status(check_trailer, b"X: y", 200, MAX_HEADERS + 1) == 431


def test_chunk_sizes_with_extensions_and_trailing_space() -> None:
    assert (
        chunk_size(b"1aF") == 0x1AF
        and chunk_size(b"10;name=value") == 16
        and chunk_size(b"10 \t;x") == 16
    )


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_parse_head_returns_or_refuses(head: bytes) -> None:
    try:
        method, path, _query, headers, _http11 = parse_head(head, 8190)
    except BadRequest as exc:
        assert exc.status in (400, 414, 431)
        return
    assert method.isascii() and path.startswith("/") and all(k == k.lower() for k in headers)


_HEAD_LINES = st.lists(
    st.sampled_from(
        [
            b"GET /v1/kv/a HTTP/1.1",
            b"PUT /x?y=%zz HTTP/1.0",
            b"Content-Length: 5",
            b"Host: h",
            b"Transfer-Encoding: chunked",
            b"X:",
            b"X: \xc2\xb2",
            b"\x00",
            b" folded",
            b"A: b\r",
        ]
    )
    | st.binary(max_size=40),
    min_size=1,
    max_size=12,
)


@FUZZ
@given(_HEAD_LINES)
def test_fuzz_heads_made_of_plausible_lines_return_or_refuse(lines: list[bytes]) -> None:
    try:
        _method, _path, _query, headers, _http11 = parse_head(b"\r\n".join(lines), 8190)
        content_length(headers)
    except BadRequest as exc:
        assert exc.status in (400, 414, 431)


@FUZZ
@given(st.binary(max_size=40) | st.text(max_size=20).map(str.encode))
def test_fuzz_chunk_size_returns_a_size_or_refuses(line: bytes) -> None:
    try:
        assert 0 <= chunk_size(line) < 1 << 64
    except BadRequest as exc:
        assert exc.status == 400


@FUZZ
@given(st.text(max_size=24))
def test_fuzz_content_length_returns_a_length_or_refuses(text: str) -> None:
    try:
        length = content_length({"content-length": text})
    except BadRequest as exc:
        assert exc.status == 400
        return
    assert length is not None and length >= 0 and text.isascii() and text.isdigit()
