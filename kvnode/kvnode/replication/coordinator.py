"""The coordinator: fan a client operation out to the key's replicas and count answers.

No task per replica call: each replica's future gets a callback that counts acks and
failures and resolves one waiter as soon as the consistency level is met (or can no longer
be). Calls still in flight then finish in the background: failures become hints, stale
read answers trigger read repair.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from opentelemetry.trace import Span

from kvnode import telemetry
from kvnode.keys import key_hash
from kvnode.replication.cluster import Cluster
from kvnode.replication.peers import NO_TRACE, PeerError
from kvnode.replication.quorum import required
from kvnode.running import running_loop
from kvnode.storage import Record, newest


class NotEnoughReplicas(Exception):
    def __init__(self, needed: int, acked: int, failures: dict[str, str]):
        detail = ", ".join(f"{peer}: {why}" for peer, why in sorted(failures.items()))
        super().__init__(f"{acked} of {needed} required replicas answered ({detail})")
        self.needed, self.acked, self.failures = needed, acked, failures


_NeedSet = tuple[tuple[str, ...], int]  # a replica set and how many of it must answer


class _Tally:
    """Answers counted against the level's quorum of one replica set, or (while ranges move)
    of each of `sets` (owners, need): done once each is met or one can no longer be."""

    __slots__ = ("need", "total", "acked", "failures", "done", "answers", "sets", "ok")

    def __init__(
        self, need: int, total: int, done: asyncio.Future[None], sets: tuple[_NeedSet, ...] = ()
    ):
        self.need, self.total, self.done, self.sets = need, total, done, sets
        self.acked = 0
        self.failures: dict[str, str] = {}
        self.answers: dict[str, Record | None] = {}
        self.ok: set[str] = set()

    def settle(self) -> None:
        if self.done.done():
            return
        if not self.sets:
            if self.acked >= self.need or len(self.failures) > self.total - self.need:
                self.done.set_result(None)
            return
        met = True
        for owners, need in self.sets:
            if sum(o in self.ok for o in owners) < need:
                met = False
                if sum(o in self.failures for o in owners) > len(owners) - need:
                    self.done.set_result(None)
                    return
        if met:
            self.done.set_result(None)

    def met(self) -> bool:
        if not self.sets:
            return self.acked >= self.need
        return all(sum(o in self.ok for o in owners) >= need for owners, need in self.sets)


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, PeerError) else f"storage error: {exc}"


class Coordinator:
    def __init__(self, cluster: Cluster):
        self.c = cluster

    def _failed_call(
        self,
        parent: Span | None,
        owner: str,
        operation: str,
        start_ns: int,
        exc: BaseException,
        reason: str,
    ) -> None:
        """A peer call has no span of its own: the replica's SERVER span, a child of the
        coordinator's span, is the one span per replica call. A call that failed (or timed
        out) becomes visible as a CLIENT span recorded after the fact, from the call's start
        to now, with status ERROR and the replica's address."""
        if parent is None or owner == self.c.id:
            return
        member = self.c.member(owner)
        host = member.host if member is not None else owner
        attrs: dict[str, Any] = {
            "kvstore.operation": operation,
            "db.operation.name": operation,
            "server.address": host,
            "network.peer.address": host,
            "kvstore.member.id": owner,
        }
        telemetry.record_failure(
            f"kvstore.{operation}", telemetry.CLIENT, attrs, parent, start_ns, exc, reason
        )

    def _owners(self, khash: int) -> tuple[str, ...]:
        owners = self.c.owners(khash)
        if not owners:
            raise NotEnoughReplicas(
                1, 0, {"ring": "no members known yet (peers file missing or empty)"}
            )
        return owners

    # -- writes ---------------------------------------------------------------------
    async def write(
        self, key: bytes, value: bytes, tombstone: bool, level: str, span: Span | None = None
    ) -> tuple[Record, int, int]:
        """Returns (record, acked, required) once the level is met; raises NotEnoughReplicas."""
        c = self.c
        khash = key_hash(key)
        owners = self._owners(khash)
        need = required(level, len(owners))
        record = Record(key, b"" if tombstone else value, c.clock.now(), tombstone)
        loop = running_loop()
        tally = _Tally(need, len(owners), loop.create_future())
        if c.view.previous:  # ranges move: old and new owners get it, quorums per phase
            owners, tally.sets = self._moving(khash, level)
        trace, started = (
            (telemetry.w3c_headers(span), time.time_ns()) if span is not None else (NO_TRACE, 0)
        )
        local = False
        undecided = span is not None and telemetry.undecided(span)
        for owner in owners:
            if owner == c.id:
                local = True
                continue
            member = c.member(owner)
            assert member is not None
            c.peers.put(member, [record], "replicate", trace).add_done_callback(
                partial(self._write_answered, tally, owner, record, span, started)
            )
            if undecided:
                telemetry.note_call(span, owner)  # type: ignore[arg-type]
        if local:
            # The own copy is queued to the writer after the peer frames have gone out (their
            # flush is scheduled first): the peers' round trip is the longer path, and a woken
            # writer thread would compete with this one for the GIL while they are sent.
            if len(owners) > 1:
                loop.call_soon(self._write_local, tally, record, span, started)
            else:
                self._write_local(tally, record, span, started)
        await tally.done
        if not tally.met():
            raise NotEnoughReplicas(need, tally.acked, dict(tally.failures))
        return record, tally.acked, need

    def _moving(self, khash: int, level: str) -> tuple[tuple[str, ...], tuple[_NeedSet, ...]]:
        """While ranges move: every replica to contact, and each set's required answers."""
        sets = tuple((owners, required(level, len(owners))) for owners in self.c.write_sets(khash))
        return self.c.copy_to(khash), sets

    def _write_local(self, tally: _Tally, record: Record, span: Span | None, started: int) -> None:
        fut: asyncio.Future[Any]
        try:
            fut = self.c.store.apply([record])
        except RuntimeError as exc:  # the store is closed: shutting down
            fut = running_loop().create_future()
            fut.set_exception(exc)
        fut.add_done_callback(
            partial(self._write_answered, tally, self.c.id, record, span, started)
        )

    def _write_answered(
        self,
        tally: _Tally,
        owner: str,
        record: Record,
        span: Span | None,
        started: int,
        fut: asyncio.Future[Any],
    ) -> None:
        exc = fut.exception()
        if exc is None:
            tally.acked += 1
            tally.ok.add(owner)
        else:
            reason = _reason(exc)
            tally.failures[owner] = reason
            self.c.metrics.replication_failures.inc(owner, reason.split(":")[0])
            if owner != self.c.id and self.c.settings.hinted_handoff:
                self.c.add_hints(owner, [record])
            if span is not None:
                self._failed_call(span, owner, "replicate", started, exc, reason)
        tally.settle()

    # -- reads ----------------------------------------------------------------------
    async def read(
        self, key: bytes, level: str, span: Span | None = None
    ) -> tuple[Record | None, int, int]:
        """Ask as many replicas as the level needs (this node first when it is one), one
        more for each that fails; newest answer wins and stale answerers are repaired.
        Returns (record or None, answered, required); raises NotEnoughReplicas."""
        c = self.c
        khash = key_hash(key)
        owners = self._owners(khash)
        need = required(level, len(owners))
        tally = _Tally(need, len(owners), running_loop().create_future())
        if c.view.previous:  # ranges move: the old owners are consulted (phase rules)
            sets = c.write_sets(khash)
            if len(sets) == 1:
                owners = sets[0]
                tally.need = need = required(level, len(owners))
                tally.total = len(owners)
            else:
                owners, tally.sets = self._moving(khash, level)
                need = len(owners)  # every replica is asked
        spare = [o for o in owners if o != c.id]
        if c.id in owners:
            tally.answers[c.id] = c.store.get(key)
            tally.acked += 1
            tally.ok.add(c.id)
        for _ in range(min(need - tally.acked, len(spare))):
            self._ask(tally, spare, key, span)
        tally.settle()
        await tally.done
        if not tally.met():
            raise NotEnoughReplicas(tally.need, tally.acked, dict(tally.failures))
        winner = newest(tally.answers.values())
        if winner is not None:
            stale = [o for o, r in tally.answers.items() if r != winner]
            if stale:
                self.repair(winner, stale, span)
        return winner, tally.acked, tally.need

    def _ask(self, tally: _Tally, spare: list[str], key: bytes, parent: Span | None) -> None:
        owner = spare.pop(0)
        member = self.c.member(owner)
        assert member is not None
        trace, started = (
            (telemetry.w3c_headers(parent), time.time_ns()) if parent is not None else (NO_TRACE, 0)
        )
        fut = self.c.peers.get(member, key, trace)
        fut.add_done_callback(
            partial(self._read_answered, tally, spare, key, owner, started, parent)
        )
        if parent is not None:
            telemetry.note_call(parent, owner)

    def _read_answered(
        self,
        tally: _Tally,
        spare: list[str],
        key: bytes,
        owner: str,
        started: int,
        parent: Span | None,
        fut: asyncio.Future[Any],
    ) -> None:
        exc = fut.exception()
        if exc is None:
            record = fut.result()
            tally.answers[owner] = record
            tally.acked += 1
            tally.ok.add(owner)
            if tally.done.done():  # answered after the client got its reply: repair it if stale
                winner = newest(tally.answers.values())
                if winner is not None and record != winner:
                    self.repair(winner, [owner], parent)
        else:
            reason = _reason(exc)
            tally.failures[owner] = reason
            self.c.metrics.replication_failures.inc(owner, reason.split(":")[0])
            if parent is not None:
                self._failed_call(parent, owner, "read", started, exc, reason)
            if spare and not tally.done.done():
                self._ask(tally, spare, key, parent)
        tally.settle()

    def finish(self, span: Span) -> None:
        """End the SERVER span of a client operation; with retroactive sampling, a kept trace
        is kept by the replicas this node called in it too (a KEEP to each, one-way)."""
        for owner in telemetry.finish(span):
            member = self.c.member(owner)
            if member is not None and self.c.peers.keep(member, span.get_span_context().trace_id):
                self.c.metrics.trace_keeps_sent.inc()

    def repair(self, winner: Record, stale: list[str], parent: Span | None) -> None:
        """Push the newest record to replicas that answered with an older one (or none)."""
        c = self.c
        c.metrics.read_repairs.inc(amount=len(stale))
        span = None
        trace = NO_TRACE
        if telemetry.ENABLED and parent is not None:
            span = telemetry.start_child(
                "kvstore.read_repair",
                telemetry.INTERNAL,
                {
                    "kvstore.operation": "read_repair",
                    "kvstore.key.hash": telemetry.key_hash_attr(key_hash(winner.key)),
                    "kvstore.replicas.required": len(stale),
                },
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
                    if span is not None:
                        telemetry.note_call(span, owner)
        if futs:
            gathered = asyncio.gather(*futs, return_exceptions=True)
            if span is not None:
                gathered.add_done_callback(lambda _f: span.end())
        elif span is not None:
            span.end()


__all__ = ["Coordinator", "NotEnoughReplicas"]
