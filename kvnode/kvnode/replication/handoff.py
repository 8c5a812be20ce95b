"""Hinted handoff: replay persisted hints to replicas that are reachable again."""

from __future__ import annotations

from kvnode import telemetry
from kvnode.keys import key_hash
from kvnode.replication.cluster import Cluster
from kvnode.replication.peers import PeerError, batches
from kvnode.storage import Record

BATCH = 256


async def replay_hints(cluster: Cluster) -> int:
    """One pass over every target with pending hints; returns how many were delivered."""
    c = cluster
    delivered = 0
    for target in list(c.store.hint_counts()):
        while True:
            pending = c.store.hints_for(target, BATCH)
            if not pending:
                break
            batch = pending[: len(next(batches([r for _, r in pending])))]  # bounded in bytes too
            ids = [i for i, _ in batch]
            records = [r for _, r in batch]
            member = c.member(target)
            if member is None:  # the target left: hand the records to their current owners
                await _reroute(c, records)
                await c.store.delete_hints(ids)
                continue
            span = None
            if telemetry.ENABLED:
                span = telemetry.start(
                    "kvstore.hinted_handoff",
                    telemetry.CLIENT,
                    {
                        "kvstore.operation": "hinted_handoff",
                        "server.address": member.host,
                        "network.peer.address": member.host,
                        "kvstore.replicas.required": 1,
                        "kvstore.records": len(records),
                    },
                )
            try:
                trace = telemetry.w3c_headers(span) if span is not None else ("", "")
                await c.peers.put(member, records, "hinted_handoff", trace)
            except PeerError as exc:
                if span is not None:
                    telemetry.fail(span, exc, exc.reason)
                    span.end()
                break  # still down: keep the hints, try again next interval
            if span is not None:
                span.end()
            await c.store.delete_hints(ids)
            delivered += len(ids)
            c.metrics.hints_delivered.inc(amount=len(ids))
    return delivered


async def _reroute(c: Cluster, records: list[Record]) -> None:
    by_owner: dict[str, list[Record]] = {}
    for r in records:
        for owner in c.owners(key_hash(r.key)):
            by_owner.setdefault(owner, []).append(r)
    for owner, recs in by_owner.items():
        if owner == c.id:
            await c.store.apply(recs)
        else:
            await c.store.add_hints(owner, recs)
