"""Peer client: one multiplexed connection per peer, futures resolved by request id.

A request is one frame queued on the connection's outbox (frames of one loop iteration go
out in one write) and one entry in its pending table, whose deadlines a periodic sweep
enforces: no task and no timer per call. A peer that cannot be
reached is marked down for a short backoff so calls fail fast (and become hints) instead
of each waiting for a connect timeout; a peer that hangs costs each call at most
`timeout`; a peer that answers garbage gets its connection dropped. Each connection starts
with a HELLO naming the peer protocol versions this node speaks (frames.PROTOCOL); a peer
without a common version refuses it, and calls to it fail with that reason.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

from kvnode.metrics import Metrics
from kvnode.replication import merkle
from kvnode.replication.peers import NO_TRACE, OPERATIONS, PeerError, Trace
from kvnode.replication.ring import Member
from kvnode.running import running_loop
from kvnode.storage import Record
from kvnode.transport import frames
from kvnode.transport.outbox import Outbox

Decoder = Callable[[bytes], Any]
log = logging.getLogger("kvnode.peer")


def _records(body: bytes) -> list[Record]:
    return frames.decode_records(body)[1]


def _one_record(body: bytes) -> Record | None:
    records = _records(body)
    if len(records) > 1:
        raise frames.ProtocolError("expected at most one record")
    return records[0] if records else None


def _hint_count(body: bytes) -> int:
    """A PING answer: the hints held for the asker, or nothing (an older build: none)."""
    return frames.decode_u32(body) if body else 0


def _leaves(body: bytes) -> list[bytes]:
    if len(body) != merkle.LEAVES * 16:
        raise frames.ProtocolError("wrong Merkle leaf count")
    return [body[i : i + 16] for i in range(0, len(body), 16)]


class _Connection(asyncio.Protocol):
    def __init__(self, client: PeerClient, addr: tuple[str, int]):
        self.client = client
        self.addr = addr
        self.transport: asyncio.Transport | None = None
        self.outbox: Outbox | None = None
        self.buffer = bytearray()
        self.pending: dict[int, tuple[asyncio.Future[Any], float, Decoder]] = {}
        self.sweeper: asyncio.TimerHandle | None = None
        self.version = 0  # the negotiated peer protocol version, once the HELLO is answered
        self.lost = ""  # why the connection ended, once it did

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.outbox = Outbox(self.transport, loop)  # type: ignore[arg-type]
        self.sweeper = loop.call_later(self.client.sweep_interval, self.sweep)
        versions = self.client.versions
        if versions[1] >= 2:  # request id 0, ahead of every request on this connection
            hello = frames.encode_hello(versions, self.client.node_id)
            self.outbox.write(frames.encode(0, frames.HELLO, hello))
        else:
            self.version = 1  # (a node emulating version 1 says nothing first)

    def hello_answered(self, msg: frames.Message) -> None:
        """The peer's answer to the HELLO: a version, a refusal, or (a version-1 peer, which
        does not know HELLO) an error about an unknown message type."""
        client = self.client
        text = msg.body.decode(errors="replace")[:300]
        if msg.type == frames.OK:
            self.version = frames.decode_u16(msg.body)
            client.handshake("ok")
            return
        legacy_ok = frames.negotiate(client.versions, (1, 1)) is not None
        if not text.startswith(frames.REFUSED) and legacy_ok:
            self.version = 1
            client.handshake("legacy")
            log.info("peer %s:%d speaks peer protocol version 1 (no handshake)", *self.addr)
            return
        if not text.startswith(frames.REFUSED):
            low, high = client.versions
            text = f"{frames.REFUSED}: the peer speaks version 1, this node {low}-{high}"
        log.warning("peer %s:%d refused: %s", *self.addr, text)
        client.handshake("refused")
        client.mark_down(self.addr, f"refused: {text}")
        self.abort(f"refused: {text}")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            payloads = frames.split(self.buffer, self.client.max_frame)
        except frames.ProtocolError as exc:
            self.abort(f"protocol error: {exc}")
            return
        for payload in payloads:
            try:
                msg = frames.decode(payload)
            except frames.ProtocolError as exc:
                self.abort(f"protocol error: {exc}")
                return
            if msg.request_id == 0 and not self.version:
                self.hello_answered(msg)
                continue
            entry = self.pending.pop(msg.request_id, None)
            if entry is None:
                continue  # answered after its timeout
            fut, _, decoder = entry
            if fut.done():
                continue
            if msg.type == frames.OK:
                try:
                    fut.set_result(decoder(msg.body))
                except frames.ProtocolError as exc:
                    fut.set_exception(PeerError(f"protocol error: {exc}"))
            elif msg.type == frames.ERROR:
                fut.set_exception(
                    PeerError(f"remote error: {msg.body.decode(errors='replace')[:200]}")
                )
            else:
                fut.set_exception(PeerError(f"protocol error: unexpected response type {msg.type}"))

    def abort(self, reason: str) -> None:
        self.fail_all(reason)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
        self.fail_all("connection lost")
        self.client.forget(self)

    def fail_all(self, reason: str) -> None:
        self.lost = self.lost or reason
        pending, self.pending = self.pending, {}
        for fut, _, _ in pending.values():
            if not fut.done():
                fut.set_exception(PeerError(reason))

    def send(
        self, request_id: int, fut: asyncio.Future[Any], frame: bytes, decoder: Decoder
    ) -> None:
        assert self.outbox is not None
        if self.lost:  # lost between the connect and this call (e.g. the HELLO was refused)
            fut.set_exception(PeerError(self.lost))
            return
        self.pending[request_id] = (fut, time.monotonic() + self.client.timeout, decoder)
        self.outbox.write(frame)

    def sweep(self) -> None:
        """Fail the calls whose deadline passed (a peer that hangs costs at most the timeout)."""
        now = time.monotonic()
        expired = [rid for rid, (_, deadline, _) in self.pending.items() if deadline <= now]
        for rid in expired:
            fut = self.pending.pop(rid)[0]
            if not fut.done():
                fut.set_exception(PeerError(f"timeout after {self.client.timeout:g}s"))
        if self.transport is not None and not self.transport.is_closing():
            self.sweeper = asyncio.get_running_loop().call_later(
                self.client.sweep_interval, self.sweep
            )


class PeerClient:
    """``tls``: returns the current client context (mutual TLS, credentials.py), or None for
    plain TCP; asked at each new connection, so a reloaded certificate is used from then on."""

    def __init__(
        self,
        timeout: float = 2.0,
        max_frame: int = 64 * 1024 * 1024,
        backoff: float = 0.5,
        tls: Callable[[], ssl.SSLContext | None] = lambda: None,
        node_id: str = "",
        versions: tuple[int, int] = frames.PROTOCOL,
        metrics: Metrics | None = None,
    ):
        self.tls = tls
        self.node_id = node_id
        self.versions = versions
        self.metrics = metrics
        self.cut_off: frozenset[str] = frozenset()  # test faults: members whose calls fail at once
        self.timeout = timeout
        self.max_frame = max_frame
        self.backoff = backoff
        self.sweep_interval = min(0.1, timeout / 5)
        self._ids = itertools.count(1)
        self._conns: dict[tuple[str, int], _Connection] = {}
        self._connecting: dict[tuple[str, int], asyncio.Future[_Connection]] = {}
        self._down: dict[tuple[str, int], tuple[float, str]] = {}

    def forget(self, conn: _Connection) -> None:
        if self._conns.get(conn.addr) is conn:
            del self._conns[conn.addr]

    def handshake(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.peer_handshakes.inc("client", result)

    def mark_down(self, addr: tuple[str, int], reason: str) -> None:
        """Calls to `addr` fail at once with `reason` for the backoff."""
        self._down[addr] = (time.monotonic() + self.backoff, reason)

    def forget_failures(self) -> None:
        """Drop the backoff of peers that could not be reached (they are tried again)."""
        self._down.clear()

    def close(self) -> None:
        for conn in list(self._conns.values()):
            conn.abort("client closed")
        self._conns.clear()

    def _request(
        self, member: Member, type_: int, body: bytes, decoder: Decoder, trace: Trace
    ) -> asyncio.Future[Any]:
        loop = running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self.cut_off and member.id in self.cut_off:
            fut.set_exception(PeerError("unreachable: partitioned (test fault)"))
            return fut
        request_id = next(self._ids) & 0xFFFFFFFF or 1  # 0 is the HELLO's
        frame = frames.encode(request_id, type_, body, trace[0], trace[1])
        addr = (member.host, member.port)
        conn = self._conns.get(addr)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.send(request_id, fut, frame, decoder)
            return fut
        down = self._down.get(addr)
        if down is not None and down[0] > time.monotonic():
            why = down[1] if down[1].startswith("refused") else f"unreachable: {down[1]}"
            fut.set_exception(PeerError(why))
            return fut
        loop.create_task(self._connect_and_send(addr, request_id, fut, frame, decoder))
        return fut

    async def _connect_and_send(
        self,
        addr: tuple[str, int],
        request_id: int,
        fut: asyncio.Future[Any],
        frame: bytes,
        decoder: Decoder,
    ) -> None:
        try:
            conn = await self._connect(addr)
        except PeerError as exc:
            if not fut.done():
                fut.set_exception(exc)
            return
        if not fut.done():
            conn.send(request_id, fut, frame, decoder)

    async def _connect(self, addr: tuple[str, int]) -> _Connection:
        waiting = self._connecting.get(addr)
        if waiting is not None:
            return await asyncio.shield(waiting)
        loop = asyncio.get_running_loop()
        waiting = self._connecting[addr] = loop.create_future()
        context = self.tls()
        try:
            # The peers file's host is the name the member's certificate must carry.
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self, addr),
                    addr[0],
                    addr[1],
                    ssl=context,
                    server_hostname=addr[0] if context is not None else None,
                ),
                self.timeout,
            )
            self._conns[addr] = conn
            self._down.pop(addr, None)
            waiting.set_result(conn)
            return conn
        except (TimeoutError, OSError) as exc:
            reason = "connect timeout" if isinstance(exc, TimeoutError) else _reason(exc)
            self.mark_down(addr, reason)
            err = PeerError(f"unreachable: {reason}")
            waiting.set_exception(err)
            waiting.exception()  # retrieved: other waiters re-raise it via shield
            raise err from None
        finally:
            del self._connecting[addr]

    # -- the PeerAPI ------------------------------------------------------------------
    def put(
        self, member: Member, records: Sequence[Record], operation: str, trace: Trace = NO_TRACE
    ) -> asyncio.Future[int]:
        body = frames.encode_records(records, OPERATIONS.index(operation))
        return self._request(member, frames.PUT, body, frames.decode_u32, trace)

    def get(
        self, member: Member, key: bytes, trace: Trace = NO_TRACE
    ) -> asyncio.Future[Record | None]:
        return self._request(member, frames.GET, key, _one_record, trace)

    def merkle(
        self, member: Member, requester: str, trace: Trace = NO_TRACE
    ) -> asyncio.Future[list[bytes]]:
        return self._request(member, frames.MERKLE, requester.encode(), _leaves, trace)

    def fetch(
        self, member: Member, requester: str, leaves: Sequence[int], trace: Trace = NO_TRACE
    ) -> asyncio.Future[list[Record]]:
        return self._request(
            member, frames.FETCH, frames.encode_fetch(requester, leaves), _records, trace
        )

    def status(self, member: Member, body: bytes) -> asyncio.Future[bytes]:
        return self._request(member, frames.STATUS, body, bytes, NO_TRACE)

    def hints_held(self, member: Member, requester: str) -> asyncio.Future[int]:
        return self._request(member, frames.PING, requester.encode(), _hint_count, NO_TRACE)

    def keep(self, member: Member, trace_id: int) -> bool:
        """Tell `member` to export its spans of `trace_id` (retroactive sampling): one one-way
        KEEP frame on the open connection, if it negotiated version 3. False when not sent (no
        connection: the call this follows failed; or an older peer, which has no buffer)."""
        conn = self._conns.get((member.host, member.port))
        if (
            conn is None
            or conn.version < frames.KEEP_VERSION
            or conn.outbox is None
            or conn.lost
            or (self.cut_off and member.id in self.cut_off)
        ):
            return False
        request_id = next(self._ids) & 0xFFFFFFFF or 1
        conn.outbox.write(frames.encode(request_id, frames.KEEP, frames.encode_trace_id(trace_id)))
        return True

    def ping(self, member: Member) -> asyncio.Future[Any]:
        return self._request(member, frames.PING, b"", lambda b: None, NO_TRACE)


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):  # e.g. the peer's certificate does not verify
        return f"TLS: {exc.reason or exc}"
    return exc.strerror or str(exc)
