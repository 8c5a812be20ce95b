"""Strict HTTP/1.1 request parsing for the client port (pure: bytes in, values or BadRequest
out). Never imports asyncio or the server; the fuzz tests call these functions directly.

Strict means: the head is ASCII only (a percent-encoded path carries UTF-8), the request line
is `METHOD SP /target SP HTTP/1.x` with a token method and a visible-ASCII target, header
names are tokens and values visible ASCII with spaces and tabs, there are at most
`max_headers` header lines of at most `max_line` bytes each, `Content-Length` is ASCII digits
only (one value), a request with both `Content-Length` and `Transfer-Encoding` is refused (the
classic request-smuggling ambiguity), and chunk sizes are 1-16 hex digits (no `0x`, `_`, sign
or spaces inside). Anything else raises BadRequest with the status to answer (400, 414, 431).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_T = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # a token (RFC 9110)
_REQUEST_LINE = re.compile(rb"(" + _T + rb") (/[\x21-\x7e]*) HTTP/1\.([01])")
_HEADER_BLOCK = re.compile(
    rb"(?:\r\n" + _T + rb":[\x20-\x7e\t]*)*"
)  # one pass over every header line
_DIGITS = re.compile(r"[0-9]{1,18}")  # [0-9], not \d: ASCII digits only
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")

MAX_HEADERS = 100


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_head(
    head: bytes, max_line: int, max_headers: int = MAX_HEADERS
) -> tuple[str, str, str, dict[str, str], bool]:
    """(method, decoded path, raw query, lower-cased headers, HTTP/1.1?) of a request head
    (without its final empty line)."""
    if not head.isascii():
        raise BadRequest(400, "the request head must be ASCII (percent-encode the path)")
    end = head.find(b"\r\n")
    line = head if end < 0 else head[:end]
    if len(line) > max_line:
        raise BadRequest(414, f"request line longer than {max_line} bytes")
    request = _REQUEST_LINE.fullmatch(line)
    if request is None:
        raise BadRequest(
            400, "malformed request line: expected METHOD /path HTTP/1.1, the path in visible ASCII"
        )
    method, target, minor = request.groups()
    headers: dict[str, str] = {}
    if end >= 0:
        block = head[end:]
        if not _HEADER_BLOCK.fullmatch(block):
            raise BadRequest(400, "malformed header line: expected Name: value, in visible ASCII")
        lines = block[2:].split(b"\r\n")
        if len(lines) > max_headers:
            raise BadRequest(431, f"more than {max_headers} header lines")
        for raw in lines:
            if len(raw) > max_line:
                raise BadRequest(431, f"a header line is longer than {max_line} bytes")
            name, _, value = raw.decode("ascii").partition(":")
            key = name.lower()
            text = value.strip(" \t")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
    path, _, query = target.decode("ascii").partition("?")
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(400, "the path is not valid UTF-8 once percent-decoded") from None
    return method.decode("ascii"), decoded, query, headers, minor == b"1"


def content_length(headers: dict[str, str]) -> int | None:
    """The announced body length: None without one; BadRequest unless it is ASCII digits
    and the request does not also say Transfer-Encoding."""
    text = headers.get("content-length")
    if text is None:
        return None
    if "transfer-encoding" in headers:
        raise BadRequest(400, "Content-Length and Transfer-Encoding together are ambiguous")
    if not _DIGITS.fullmatch(text):
        raise BadRequest(400, "invalid Content-Length: expected one decimal number of ASCII digits")
    return int(text)


def check_trailer(line: bytes, max_line: int, count: int, max_headers: int = MAX_HEADERS) -> None:
    """A chunked body's trailer line (the `count`th): a header line, within the same bounds."""
    if count > max_headers:
        raise BadRequest(431, f"more than {max_headers} trailer lines")
    if len(line) > max_line:
        raise BadRequest(431, f"a trailer line is longer than {max_line} bytes")
    if not line.isascii() or not _HEADER_BLOCK.fullmatch(b"\r\n" + line):
        raise BadRequest(400, "malformed trailer line: expected Name: value, in visible ASCII")


def chunk_size(line: bytes) -> int:
    """The size of a chunk from its size line (extensions after `;` are ignored)."""
    size = line.split(b";", 1)[0].rstrip(b" \t")
    if not _HEX.fullmatch(size) or not line.isascii():
        raise BadRequest(400, "malformed chunk size: expected 1-16 hex digits")
    return int(size, 16)


__all__ = [
    "MAX_HEADERS",
    "BadRequest",
    "check_trailer",
    "chunk_size",
    "content_length",
    "parse_head",
]
