"""The peer wire format (pure encode/decode).

    frame    := u32 length, payload            (length of payload, big endian)
    payload  := u32 request id, u8 type, u8 len + traceparent, u16 len + tracestate, body

Requests and responses share the framing; responses echo the request id (so one connection
multiplexes many in-flight requests) with type OK or ERROR (body = UTF-8 message). KEEP
(version 3) is one-way: no answer, its body a 16-byte trace id (retroactive sampling).
Anything that does not parse raises ProtocolError; the receiver answers or drops the
connection, never applies a partial message.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from kvnode.storage import Record

PUT, GET, MERKLE, FETCH, PING, STATUS, HELLO, KEEP = 1, 2, 3, 4, 5, 6, 7, 8
OK, ERROR = 0x80, 0x81
REQUEST_TYPES = {
    PUT: "put",
    GET: "get",
    MERKLE: "merkle",
    FETCH: "fetch",
    PING: "ping",
    STATUS: "status",
    HELLO: "hello",
    KEEP: "keep",
}

# Peer protocol versions (docs/kvnode.md, "Peer protocol versions"): a build speaks its own
# version and the one before, so a rolling upgrade from one release to the next always finds a
# common version; a peer without a common version is refused at the handshake. Version 1 had
# no handshake (its first frame is a request); version 2 added HELLO and STATUS; version 3
# added KEEP (sent only on connections that negotiated 3: a version-2 peer never sees one).
PROTOCOL = (2, 3)  # (oldest, newest) this build speaks
KEEP_VERSION = 3
REFUSED = "incompatible peer protocol"
_HELLO = struct.Struct(">HH")

_LEN = struct.Struct(">I")
_HEAD = struct.Struct(">IBB")
_U16 = struct.Struct(">H")
_REC = struct.Struct(">HIQB")
_U32 = struct.Struct(">I")
_BARE = struct.Struct(">IIBBH")  # length, request id, type, empty traceparent and tracestate
# a traced frame in the common form (a 55-byte version-00 traceparent, no tracestate): one pack
_TRACED = struct.Struct(">IIBB55sH")
_ONE = struct.Struct(">BIHIQB")  # a body of exactly one record: operation, count, record head
_new = tuple.__new__  # builds Message and Record without their Python-level __new__ (hot path)


class ProtocolError(ValueError):
    pass


class Message(NamedTuple):
    request_id: int
    type: int
    traceparent: str
    tracestate: str
    body: bytes


def encode(
    request_id: int, type_: int, body: bytes = b"", traceparent: str = "", tracestate: str = ""
) -> bytes:
    if not tracestate:  # untraced, or traced in the common form: one pack
        if not traceparent:
            return _BARE.pack(_HEAD.size + 2 + len(body), request_id, type_, 0, 0) + body
        if len(traceparent) == 55:
            size = _HEAD.size + 57 + len(body)
            return _TRACED.pack(size, request_id, type_, 55, traceparent.encode(), 0) + body
    tp = traceparent.encode()
    ts = tracestate.encode()
    payload_len = _HEAD.size + len(tp) + 2 + len(ts) + len(body)
    return b"".join(
        (
            _LEN.pack(payload_len),
            _HEAD.pack(request_id, type_, len(tp)),
            tp,
            _U16.pack(len(ts)),
            ts,
            body,
        )
    )


def decode(payload: bytes) -> Message:
    try:
        request_id, type_, tp_len = _HEAD.unpack_from(payload, 0)
        pos = _HEAD.size
        tp = payload[pos : pos + tp_len].decode("ascii") if tp_len else ""
        pos += tp_len
        (ts_len,) = _U16.unpack_from(payload, pos)
        pos += 2
        ts = payload[pos : pos + ts_len].decode("ascii") if ts_len else ""
        pos += ts_len
        if pos > len(payload):
            raise ProtocolError("truncated header")
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed header: {exc}") from None
    return _new(Message, (request_id, type_, tp, ts, payload[pos:]))


def split(buffer: bytearray, max_frame: int) -> list[bytes]:
    """Remove and return every complete payload at the front of `buffer`."""
    out = []
    pos = 0
    size = len(buffer)
    while size - pos >= 4:
        (length,) = _LEN.unpack_from(buffer, pos)
        if length > max_frame or length < _HEAD.size + 2:
            raise ProtocolError(f"frame length {length} outside 7..{max_frame}")
        if size - pos - 4 < length:
            break
        out.append(bytes(buffer[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    if pos:
        del buffer[:pos]
    return out


def encode_records(records: Sequence[Record], operation: int = 0) -> bytes:
    if len(records) == 1:  # the common case (one write, one read answer): one pack
        r = records[0]
        return (
            _ONE.pack(operation, 1, len(r.key), len(r.value), r.version, r.tombstone)
            + r.key
            + r.value
        )
    parts = [bytes((operation,)), _U32.pack(len(records))]
    for r in records:
        parts.append(_REC.pack(len(r.key), len(r.value), r.version, r.tombstone))
        parts.append(r.key)
        parts.append(r.value)
    return b"".join(parts)


def decode_records(body: bytes) -> tuple[int, list[Record]]:
    try:
        operation = body[0]
        (count,) = _U32.unpack_from(body, 1)
        pos = 5
        out = []
        end = len(body)
        for _ in range(count):
            klen, vlen, version, tomb = _REC.unpack_from(body, pos)
            pos += _REC.size
            if pos + klen + vlen > end or tomb > 1 or klen == 0:
                raise ProtocolError("truncated or invalid record")
            key = body[pos : pos + klen]
            pos += klen
            out.append(_new(Record, (key, body[pos : pos + vlen], version, tomb == 1)))
            pos += vlen
    except (struct.error, IndexError) as exc:
        raise ProtocolError(f"malformed records: {exc}") from None
    if pos != end:
        raise ProtocolError("trailing bytes after records")
    return operation, out


def encode_hello(versions: tuple[int, int], node: str) -> bytes:
    return _HELLO.pack(*versions) + node.encode()


def decode_hello(body: bytes) -> tuple[tuple[int, int], str]:
    try:
        low, high = _HELLO.unpack_from(body, 0)
        node = body[_HELLO.size :].decode()
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed hello: {exc}") from None
    if low > high:
        raise ProtocolError("malformed hello: version range is empty")
    return (low, high), node


def negotiate(ours: tuple[int, int], theirs: tuple[int, int]) -> int | None:
    """The newest version both speak, or None (then the connection is refused)."""
    version = min(ours[1], theirs[1])
    return version if version >= max(ours[0], theirs[0]) else None


def encode_u16(value: int) -> bytes:
    return _U16.pack(value)


def decode_u16(body: bytes) -> int:
    if len(body) != 2:
        raise ProtocolError("expected a 2-byte integer")
    return int(_U16.unpack(body)[0])


def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def decode_u32(body: bytes) -> int:
    if len(body) != 4:
        raise ProtocolError("expected a 4-byte integer")
    return int(_U32.unpack(body)[0])


def encode_fetch(requester: str, leaves: Sequence[int]) -> bytes:
    ident = requester.encode()
    return b"".join(
        (_U16.pack(len(ident)), ident, _U16.pack(len(leaves)), *(_U16.pack(i) for i in leaves))
    )


def decode_fetch(body: bytes, leaf_count: int) -> tuple[str, list[int]]:
    try:
        (n,) = _U16.unpack_from(body, 0)
        requester = body[2 : 2 + n].decode()
        pos = 2 + n
        (count,) = _U16.unpack_from(body, pos)
        pos += 2
        leaves = [_U16.unpack_from(body, pos + 2 * i)[0] for i in range(count)]
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed fetch: {exc}") from None
    if pos + 2 * count != len(body) or any(i >= leaf_count for i in leaves) or not requester:
        raise ProtocolError("invalid fetch request")
    return requester, leaves


def encode_trace_id(trace_id: int) -> bytes:
    return trace_id.to_bytes(16, "big")


def decode_trace_id(body: bytes) -> int:
    if len(body) != 16:
        raise ProtocolError("expected a 16-byte trace id")
    trace_id = int.from_bytes(body, "big")
    if not trace_id:
        raise ProtocolError("the trace id is zero (invalid)")
    return trace_id
