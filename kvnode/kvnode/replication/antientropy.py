"""Merkle-tree anti-entropy: compare shared key ranges with each peer and exchange the
records of differing buckets, newest wins on both sides."""

from __future__ import annotations

from kvnode import telemetry
from kvnode.replication import merkle
from kvnode.replication.cluster import Cluster
from kvnode.replication.peers import PeerError
from kvnode.replication.replica import Replica
from kvnode.replication.ring import Member
from kvnode.storage import supersedes

LEAVES_PER_FETCH = 64


async def anti_entropy_round(cluster: Cluster, replica: Replica) -> int:
    """Compare with every other member once; returns the number of records repaired."""
    repaired = 0
    for member in cluster.ring.members:
        if member.id != cluster.id and cluster.is_member:
            repaired += await sync_with(cluster, replica, member)
    return repaired


async def sync_with(c: Cluster, replica: Replica, member: Member) -> int:
    span = None
    trace = ("", "")
    if telemetry.ENABLED:
        span = telemetry.start(
            "kvstore.anti_entropy",
            telemetry.CLIENT,
            {
                "kvstore.operation": "anti_entropy",
                "server.address": member.host,
                "network.peer.address": member.host,
            },
        )
        trace = telemetry.w3c_headers(span)
    repaired = 0
    try:
        local_tree = merkle.from_leaves(await replica.merkle_leaves_off_loop(member.id))
        remote_tree = merkle.from_leaves(await c.peers.merkle(member, c.id, trace))
        differing = merkle.diff(local_tree, remote_tree)
        c.metrics.anti_entropy_rounds.inc("repair" if differing else "in_sync")
        for start in range(0, len(differing), LEAVES_PER_FETCH):
            leaves = differing[start : start + LEAVES_PER_FETCH]
            theirs = await c.peers.fetch(member, c.id, leaves, trace)
            if theirs:
                applied = await replica.apply(theirs)
                repaired += sum(applied)
            by_key = {r.key: r for r in theirs}
            ours = [
                r
                for r in await replica.fetch_off_loop(member.id, leaves)
                if supersedes(r, by_key.get(r.key))
            ]
            if ours:
                repaired += await c.peers.put(member, ours, "anti_entropy", trace)
    except PeerError as exc:
        c.metrics.anti_entropy_rounds.inc("failed")
        if span is not None:
            telemetry.fail(span, exc, exc.reason)
    finally:
        if span is not None:
            span.set_attribute("kvstore.repaired", repaired)
            span.end()
    c.metrics.anti_entropy_repairs.inc(amount=repaired)
    return repaired
