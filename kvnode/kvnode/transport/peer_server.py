"""Peer server: decodes frames, hands them to the replica role, answers by request id.

Each request that carries a W3C traceparent gets a SERVER span continuing the caller's
trace. Malformed messages get an ERROR answer (or, if even the frame is broken, the
connection is dropped); nothing is applied unless the whole message decoded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from opentelemetry.trace import Span

from kvnode import telemetry
from kvnode.keys import key_hash
from kvnode.metrics import Metrics
from kvnode.replication import merkle
from kvnode.replication.membership import StatusError
from kvnode.replication.peers import OPERATIONS
from kvnode.replication.replica import Replica
from kvnode.storage import Record
from kvnode.transport import frames
from kvnode.transport.outbox import Outbox

log = logging.getLogger("kvnode.peer")
_SPAN_NAMES = {op: f"kvstore.{op}" for op in (*OPERATIONS, "read")}


class PeerServer:
    def __init__(
        self,
        replica: Replica,
        metrics: Metrics,
        max_key: int,
        max_value: int,
        max_frame: int,
        versions: tuple[int, int] = frames.PROTOCOL,
    ):
        self.versions = versions  # the peer protocol versions this node speaks
        self.replica = replica
        self.metrics = metrics
        self.max_key = max_key
        self.max_value = max_value
        self.max_frame = max_frame

    def protocol(self) -> asyncio.Protocol:
        return _ServerConnection(self)

    def check(self, records: list[Record]) -> None:
        for r in records:
            if len(r.key) > self.max_key or len(r.value) > self.max_value:
                raise frames.ProtocolError("record exceeds the size limits")


class _ServerConnection(asyncio.Protocol):
    def __init__(self, server: PeerServer):
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.outbox: Outbox | None = None
        self.peer_host = ""
        self.version = 0  # the peer protocol version of this connection, once known

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.outbox = Outbox(self.transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        peer = transport.get_extra_info("peername")
        self.peer_host = peer[0] if peer else ""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            payloads = frames.split(self.buffer, self.server.max_frame)
        except frames.ProtocolError as exc:
            self.drop(str(exc))
            return
        for payload in payloads:
            try:
                msg = frames.decode(payload)
            except frames.ProtocolError as exc:
                self.drop(str(exc))
                return
            if not self.version and not self.handshake(msg):
                return
            if msg.type != frames.HELLO or self.server.versions[1] < 2:
                self.handle(msg)  # (a HELLO to a node emulating version 1 gets its ERROR there)

    def handshake(self, msg: frames.Message) -> bool:
        """The connection's first frame: a HELLO with the caller's versions, or (version 1,
        which had no handshake) a request. False when the connection is refused."""
        server, ours = self.server, self.server.versions
        theirs, node = (1, 1), "?"
        if msg.type == frames.HELLO and ours[1] >= 2:
            try:
                theirs, node = frames.decode_hello(msg.body)
            except frames.ProtocolError as exc:
                self.drop(str(exc))
                return False
        version = frames.negotiate(ours, theirs)
        if version is None:
            reason = (
                f"{frames.REFUSED}: this node speaks versions {ours[0]}-{ours[1]}, "
                f"the peer {theirs[0]}-{theirs[1]}"
            )
            log.warning(
                "refusing the peer connection from %s (%s): %s", self.peer_host, node, reason
            )
            server.metrics.peer_handshakes.inc("server", "refused")
            if self.transport is not None:  # written at once, then closed (no outbox: too late)
                self.transport.write(frames.encode(msg.request_id, frames.ERROR, reason.encode()))
                self.transport.close()
            return False
        self.version = version
        server.metrics.peer_handshakes.inc("server", "ok" if msg.type == frames.HELLO else "legacy")
        if msg.type == frames.HELLO and ours[1] >= 2:
            self.reply(msg.request_id, frames.OK, frames.encode_u16(version))
        else:
            log.info(
                "peer connection from %s without a handshake: peer protocol version 1",
                self.peer_host,
            )
        return True

    def drop(self, reason: str) -> None:
        log.warning("dropping peer connection from %s: %s", self.peer_host, reason)
        self.server.metrics.peer_requests.inc("malformed")
        if self.transport is not None:
            self.transport.abort()

    def reply(self, request_id: int, type_: int, body: bytes) -> None:
        if self.outbox is not None:
            self.outbox.write(frames.encode(request_id, type_, body))

    def span(
        self, msg: frames.Message, operation: str, key: bytes | None = None, records: int = 0
    ) -> Span:
        """The replica's SERVER span (attributes: `_peer_attributes`, built if exported)."""
        return telemetry.replica_span(
            _SPAN_NAMES[operation],
            msg.traceparent,
            msg.tracestate,
            _peer_attributes,
            (operation, self.peer_host, key, records),
        )

    def handle(self, msg: frames.Message) -> None:
        server = self.server
        replica = server.replica
        kind = frames.REQUEST_TYPES.get(msg.type, "unknown")
        server.metrics.peer_requests.inc(kind)
        # A SERVER span only for a traced request whose parent was sampled (parent-based
        # sampling); nothing about spans is computed otherwise.
        # With retroactive sampling every traced request is recorded (the buffer holds it).
        traced = (
            telemetry.ENABLED
            and msg.traceparent != ""
            and (telemetry.RETRO is not None or not msg.traceparent.endswith("-00"))
        )
        span = None
        try:
            if msg.type == frames.KEEP:  # one-way: no answer
                telemetry.keep_trace(frames.decode_trace_id(msg.body))
                return
            if msg.type == frames.PUT:
                op, records = frames.decode_records(msg.body)
                if op >= len(OPERATIONS):
                    raise frames.ProtocolError(f"unknown operation {op}")
                if traced:  # before the checks: a refused record is this replica's ERROR span
                    one = records[0].key if len(records) == 1 else None
                    span = self.span(msg, OPERATIONS[op], one, len(records))
                server.check(records)
                forward = OPERATIONS[op] in ("replicate", "read_repair")
                self._answer_when_done(
                    replica.apply(records, forward), msg.request_id, span, _applied_count
                )
                return
            if msg.type == frames.GET:
                if not msg.body or len(msg.body) > server.max_key:
                    raise frames.ProtocolError("invalid key")
                if traced:
                    span = self.span(msg, "read", msg.body)
                record = replica.get(msg.body)
                body = frames.encode_records([record] if record is not None else [])
            elif msg.type == frames.MERKLE:
                requester = msg.body.decode()
                if traced:
                    span = self.span(msg, "anti_entropy")
                self._answer_when_done(
                    replica.merkle_leaves_off_loop(requester), msg.request_id, span, b"".join
                )
                return
            elif msg.type == frames.FETCH:
                requester, leaves = frames.decode_fetch(msg.body, merkle.LEAVES)
                if traced:
                    span = self.span(msg, "anti_entropy")
                self._answer_when_done(
                    replica.fetch_off_loop(requester, leaves),
                    msg.request_id,
                    span,
                    frames.encode_records,
                )
                return
            elif msg.type == frames.STATUS:
                body = replica.status(msg.body)
            elif msg.type == frames.PING:  # with the asker's id: the hints held for it (catchup.py)
                body = frames.encode_u32(replica.hints_held(msg.body.decode())) if msg.body else b""
            else:
                raise frames.ProtocolError(f"unknown message type {msg.type}")
        except (frames.ProtocolError, UnicodeDecodeError, StatusError) as exc:
            server.metrics.peer_requests.inc("malformed")
            if span is not None:
                telemetry.fail(span, exc, str(exc))
                span.end()
            self.reply(msg.request_id, frames.ERROR, f"bad request: {exc}".encode())
            return
        if span is not None:
            span.end()
        self.reply(msg.request_id, frames.OK, body)

    def _answer_when_done(
        self,
        fut: asyncio.Future[Any],
        request_id: int,
        span: Span | None,
        encode: Callable[[Any], bytes],
    ) -> None:
        fut.add_done_callback(partial(self._answer, request_id, span, encode))

    def _answer(
        self,
        request_id: int,
        span: Span | None,
        encode: Callable[[Any], bytes],
        fut: asyncio.Future[Any],
    ) -> None:
        exc = fut.exception()
        if exc is None:
            self.reply(request_id, frames.OK, encode(fut.result()))
        else:
            self.reply(request_id, frames.ERROR, f"storage error: {exc}".encode())
            if span is not None:
                telemetry.fail(span, exc, "storage error")
        if span is not None:
            span.end()


def _applied_count(applied: list[bool]) -> bytes:
    return frames.encode_u32(sum(applied))


def _peer_attributes(operation: str, peer: str, key: bytes | None, records: int) -> dict[str, Any]:
    """A replica span's attributes: the key's hash for one record (or how many records),
    the operation and the calling member's address."""
    attrs: dict[str, Any] = {}
    if key is not None:
        attrs["kvstore.key.hash"] = telemetry.key_hash_attr(key_hash(key))
    elif records:
        attrs["kvstore.records"] = records
    attrs["kvstore.operation"] = operation
    attrs["db.operation.name"] = operation
    attrs["network.peer.address"] = peer
    return attrs
