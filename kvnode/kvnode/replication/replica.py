"""The replica role: what a node does with peer requests (apply, read, Merkle, fetch)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from kvnode.keys import key_hash
from kvnode.replication import membership, merkle
from kvnode.replication.cluster import Cluster
from kvnode.replication.rebalance import ensure_driver
from kvnode.storage import Record

FETCH_LIMIT_BYTES = 4 * 1024 * 1024


class Replica:
    def __init__(self, cluster: Cluster):
        self.c = cluster

    def apply(self, records: Sequence[Record], forward: bool = False) -> asyncio.Future[list[bool]]:
        """Apply records last-write-wins; resolves after they are durable.

        With `forward`, records this node does not own under its ring (a coordinator with an
        older view of the membership sent them) are also handed to their owners as hints, so a
        write made while a membership change propagates is not stranded on a non-owner."""
        c = self.c
        if records:
            c.clock.observe(
                records[0].version if len(records) == 1 else max(r.version for r in records)
            )
            if forward and c.settings.hinted_handoff:
                self._forward_misdirected(records)
        return c.store.apply(records)

    def _forward_misdirected(self, records: Sequence[Record]) -> None:
        c = self.c
        by_owner: dict[str, list[Record]] = {}
        for r in records:
            owners = c.copy_to(key_hash(r.key))
            if c.id not in owners:
                for owner in owners:
                    by_owner.setdefault(owner, []).append(r)
        for owner, recs in by_owner.items():
            c.add_hints(owner, recs)

    def status(self, body: bytes) -> bytes:
        """A peer's membership-change status in, this node's out (raises StatusError)."""
        self.c.learn(membership.decode_status(body))
        ensure_driver(self.c)  # a node that just started may have joined a change
        return membership.encode_status(self.c.status())

    def hints_held(self, peer: str) -> int:
        return self.c.store.hint_counts().get(peer, 0)

    def get(self, key: bytes) -> Record | None:
        return self.c.store.get(key)

    def shared_entries(self, peer: str, leaves: Sequence[int] | None = None) -> list[merkle.Entry]:
        """Digests of the keys that both this node and `peer` replicate (current ring),
        optionally only those in the given Merkle leaves."""
        c = self.c
        me = c.id
        out = []
        ranges = None if leaves is None else merkle.leaf_ranges(leaves)
        for entry in c.store.digests(ranges):
            owners = c.owners(entry[1])
            if me in owners and peer in owners:
                out.append(entry)
        return out

    def merkle_leaves(self, peer: str) -> list[bytes]:
        return merkle.leaves(self.shared_entries(peer))

    # Anti-entropy scans every stored key's digest: off the event loop, on the store's scan
    # thread (its own SQLite connection), so requests keep being served meanwhile.
    def merkle_leaves_off_loop(self, peer: str) -> asyncio.Future[list[bytes]]:
        return self.c.store.in_scan_thread(self.merkle_leaves, peer)

    def fetch_off_loop(self, peer: str, leaves: Sequence[int]) -> asyncio.Future[list[Record]]:
        return self.c.store.in_scan_thread(self.fetch, peer, leaves)

    def fetch(
        self, peer: str, leaves: Sequence[int], limit_bytes: int = FETCH_LIMIT_BYTES
    ) -> list[Record]:
        """Shared records in the given Merkle leaves (bounded in size; the rest next round)."""
        keys = [key for key, _h, _v, _t in self.shared_entries(peer, leaves)]
        out: list[Record] = []
        size = 0
        for record in self.c.store.get_many(keys):
            size += len(record.key) + len(record.value) + 16
            if out and size > limit_bytes:
                break
            out.append(record)
        return out
