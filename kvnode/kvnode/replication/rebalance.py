"""Rebalancing: when the member list changes, stream records to their new owners.

Every node scans its records and sends each one to the owners it gained under the new ring
(all of them if this node is leaving). A target that cannot be reached gets hints, so
nothing is lost; the node reports `rebalancing` until the pass is done.
"""

from __future__ import annotations

from kvnode import telemetry
from kvnode.keys import key_hash
from kvnode.replication.cluster import Cluster, log
from kvnode.replication.peers import PeerError, batches
from kvnode.replication.ring import Member, Ring
from kvnode.storage import Record


def moves(records: list[Record], old: Ring, new: Ring, me: str, rf: int) -> dict[str, list[Record]]:
    """Which records each member must receive (pure)."""
    leaving = me not in new.ids
    out: dict[str, list[Record]] = {}
    for r in records:
        khash = key_hash(r.key)
        before = () if leaving else old.preference(khash, rf)
        for owner in new.preference(khash, rf):
            if owner != me and owner not in before:
                out.setdefault(owner, []).append(r)
    return out


async def change_members(c: Cluster, members: tuple[Member, ...]) -> None:
    old = c.ring
    new = Ring(members, c.settings.vnodes)
    if new.members == old.members:
        return
    c.ring = new
    c.epoch += 1
    epoch = c.epoch
    log.info("membership changed (epoch %d): %s", epoch, ", ".join(new.ids))
    c.rebalancing = True
    span = None
    if telemetry.ENABLED:
        span = telemetry.start(
            "kvstore.rebalance",
            telemetry.INTERNAL,
            {"kvstore.operation": "rebalance", "kvstore.members": len(members), "kvstore.epoch": epoch},
        )
    sent = 0
    trace = telemetry.w3c_headers(span) if span is not None else ("", "")
    try:
        for page in c.store.scan():
            for target, records in moves(page, old, new, c.id, c.rf).items():
                member = new.member(target)
                assert member is not None
                for batch in batches(records):
                    try:
                        await c.peers.put(member, batch, "rebalance", trace)
                        sent += len(batch)
                    except PeerError as exc:
                        log.warning("rebalance to %s failed (%s): kept as hints", target, exc.reason)
                        await c.store.add_hints(target, batch)
            if c.epoch != epoch:
                return  # a newer change started its own pass
        c.metrics.rebalanced.inc(amount=sent)
        c.rebalanced_epoch = epoch
    finally:
        if c.epoch == epoch:
            c.rebalancing = False
        if span is not None:
            span.set_attribute("kvstore.records", sent)
            span.end()
