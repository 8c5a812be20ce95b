"""The coordinator: fan a client operation out to the key's replicas and count answers.

No task per replica call: each replica's future gets a callback that counts acks and
failures and resolves one waiter as soon as the consistency level is met (or can no longer
be). Calls still in flight then finish in the background: failures become hints, stale
read answers trigger read repair.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from kvnode import telemetry
from kvnode.keys import key_hash
from kvnode.replication.cluster import Cluster
from kvnode.replication.peers import NO_TRACE, PeerError
from kvnode.replication.quorum import required
from kvnode.storage import Record, newest
from opentelemetry.trace import Span


class NotEnoughReplicas(Exception):
    def __init__(self, needed: int, acked: int, failures: dict[str, str]):
        detail = ", ".join(f"{peer}: {why}" for peer, why in sorted(failures.items()))
        super().__init__(f"{acked} of {needed} required replicas answered ({detail})")
        self.needed, self.acked, self.failures = needed, acked, failures


class _Tally:
    __slots__ = ("need", "total", "acked", "failures", "done", "answers")

    def __init__(self, need: int, total: int, done: asyncio.Future[None]):
        self.need, self.total, self.done = need, total, done
        self.acked = 0
        self.failures: dict[str, str] = {}
        self.answers: dict[str, Record | None] = {}

    def settle(self) -> None:
        if not self.done.done() and (self.acked >= self.need or len(self.failures) > self.total - self.need):
            self.done.set_result(None)


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, PeerError) else f"storage error: {exc}"


class Coordinator:
    def __init__(self, cluster: Cluster):
        self.c = cluster

    def _replica_span(self, parent: Span | None, owner: str, operation: str, khash: int) -> Span | None:
        if parent is None or not telemetry.ENABLED:
            return None
        attrs: dict[str, Any] = {
            "kvstore.operation": operation,
            "kvstore.key.hash": telemetry.key_hash_attr(khash),
            "db.operation.name": operation,
        }
        member = self.c.member(owner)
        if owner != self.c.id and member is not None:
            attrs["server.address"] = member.host
            attrs["server.port"] = member.port
            attrs["network.peer.address"] = member.host
            kind = telemetry.CLIENT
        else:
            kind = telemetry.INTERNAL
        return telemetry.start(f"kvstore.{operation} {owner}", kind, attrs, parent)

    # -- writes ---------------------------------------------------------------------
    async def write(self, key: bytes, value: bytes, tombstone: bool, level: str, span: Span | None = None) -> tuple[Record, int, int]:
        """Returns (record, acked, required) once the level is met; raises NotEnoughReplicas."""
        c = self.c
        khash = key_hash(key)
        owners = c.owners(khash)
        need = required(level, len(owners))
        record = Record(key, b"" if tombstone else value, c.clock.now(), tombstone)
        loop = asyncio.get_running_loop()
        tally = _Tally(need, len(owners), loop.create_future())
        for owner in owners:
            rspan = self._replica_span(span, owner, "replicate", khash)
            fut: asyncio.Future[Any]
            if owner == c.id:
                fut = c.store.apply([record])
            else:
                member = c.member(owner)
                assert member is not None
                trace = telemetry.w3c_headers(rspan) if rspan is not None else NO_TRACE
                fut = c.peers.put(member, [record], "replicate", trace)
            fut.add_done_callback(partial(self._write_answered, tally, owner, record, rspan))
        if need == 0:
            tally.done.set_result(None)
        await tally.done
        if tally.acked < need:
            raise NotEnoughReplicas(need, tally.acked, dict(tally.failures))
        return record, tally.acked, need

    def _write_answered(self, tally: _Tally, owner: str, record: Record, span: Span | None, fut: asyncio.Future[Any]) -> None:
        exc = fut.exception()
        if exc is None:
            tally.acked += 1
        else:
            reason = _reason(exc)
            tally.failures[owner] = reason
            self.c.metrics.replication_failures.inc(owner, reason.split(":")[0])
            if owner != self.c.id and self.c.settings.hinted_handoff:
                self.store_hint(owner, [record])
            if span is not None:
                telemetry.fail(span, exc, reason)
        if span is not None:
            span.end()
        tally.settle()

    def store_hint(self, owner: str, records: list[Record]) -> None:
        self.c.metrics.hints_stored.inc(amount=len(records))
        self.c.store.add_hints(owner, records).add_done_callback(_ignore)

    # -- reads ----------------------------------------------------------------------
    async def read(self, key: bytes, level: str, span: Span | None = None) -> tuple[Record | None, int, int]:
        """Returns (newest record or None, answered, required); raises NotEnoughReplicas."""
        c = self.c
        khash = key_hash(key)
        owners = c.owners(khash)
        need = required(level, len(owners))
        if level == "one":
            return await self._read_one(key, khash, owners, span)
        loop = asyncio.get_running_loop()
        tally = _Tally(need, len(owners), loop.create_future())
        for owner in owners:
            if owner == c.id:
                tally.answers[owner] = c.store.get(key)
                tally.acked += 1
                continue
            rspan = self._replica_span(span, owner, "read", khash)
            member = c.member(owner)
            assert member is not None
            trace = telemetry.w3c_headers(rspan) if rspan is not None else NO_TRACE
            fut = c.peers.get(member, key, trace)
            fut.add_done_callback(partial(self._read_answered, tally, owner, rspan, span))
        tally.settle()
        await tally.done
        if tally.acked < need:
            raise NotEnoughReplicas(need, tally.acked, dict(tally.failures))
        winner = newest(tally.answers.values())
        if winner is not None:
            stale = [o for o, r in tally.answers.items() if r != winner]
            if stale:
                self.repair(winner, stale, span)
        return winner, tally.acked, need

    def _read_answered(self, tally: _Tally, owner: str, span: Span | None, parent: Span | None, fut: asyncio.Future[Any]) -> None:
        exc = fut.exception()
        if exc is None:
            record = fut.result()
            late = tally.done.done()
            tally.answers[owner] = record
            tally.acked += 1
            if late:  # answered after the client got its reply: repair it if it is stale
                winner = newest(tally.answers.values())
                if winner is not None and record != winner:
                    self.repair(winner, [owner], parent)
        else:
            reason = _reason(exc)
            tally.failures[owner] = reason
            self.c.metrics.replication_failures.inc(owner, reason.split(":")[0])
            if span is not None:
                telemetry.fail(span, exc, reason)
        if span is not None:
            span.end()
        tally.settle()

    async def _read_one(self, key: bytes, khash: int, owners: tuple[str, ...], span: Span | None) -> tuple[Record | None, int, int]:
        c = self.c
        if c.id in owners:
            return c.store.get(key), 1, 1
        failures: dict[str, str] = {}
        for owner in owners:
            member = c.member(owner)
            assert member is not None
            rspan = self._replica_span(span, owner, "read", khash)
            trace = telemetry.w3c_headers(rspan) if rspan is not None else NO_TRACE
            try:
                return await c.peers.get(member, key, trace), 1, 1
            except PeerError as exc:
                failures[owner] = exc.reason
                if rspan is not None:
                    telemetry.fail(rspan, exc, exc.reason)
            finally:
                if rspan is not None:
                    rspan.end()
        raise NotEnoughReplicas(1, 0, failures)

    def repair(self, winner: Record, stale: list[str], parent: Span | None) -> None:
        """Push the newest record to replicas that answered with an older one (or none)."""
        c = self.c
        c.metrics.read_repairs.inc(amount=len(stale))
        span = None
        trace = NO_TRACE
        if telemetry.ENABLED and parent is not None:
            span = telemetry.start(
                "kvstore.read_repair",
                telemetry.INTERNAL,
                {"kvstore.operation": "read_repair", "kvstore.key.hash": telemetry.key_hash_attr(key_hash(winner.key)),
                 "kvstore.replicas.required": len(stale)},
                parent,
            )
            trace = telemetry.w3c_headers(span)
        futs: list[asyncio.Future[Any]] = []
        for owner in stale:
            if owner == c.id:
                futs.append(c.store.apply([winner]))
            else:
                member = c.member(owner)
                if member is not None:
                    futs.append(c.peers.put(member, [winner], "read_repair", trace))
        if futs:
            gathered = asyncio.gather(*futs, return_exceptions=True)
            if span is not None:
                gathered.add_done_callback(lambda _f: span.end())
        elif span is not None:
            span.end()


def _ignore(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


__all__ = ["Coordinator", "NotEnoughReplicas"]
