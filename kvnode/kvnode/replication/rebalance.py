"""Rebalancing: when the member list changes, move ranges without losing reads.

The phases and their rules are in `membership.py` (pure); this module drives them: it
exchanges STATUS messages with every member of the change until all know the new ring,
streams each record this node holds to the owners it gained (all of them if this node is
leaving; a target that cannot be reached gets hints, so nothing is lost), then advances
phase by phase as the barriers allow. The node reports `rebalancing` until the change settled.
"""

from __future__ import annotations

import asyncio

from kvnode import telemetry
from kvnode.keys import key_hash
from kvnode.replication import membership
from kvnode.replication.cluster import Cluster, log
from kvnode.replication.membership import NEW, SETTLED, View
from kvnode.replication.peers import PeerError, batches
from kvnode.replication.ring import Member, Ring
from kvnode.storage import Record

STATUS_INTERVAL = 0.25  # seconds between STATUS rounds while a change is going on


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
    """The peers file changed: enter the `joint` phase and drive the change to its end."""
    if members == c.view.target.members:
        return
    c.view = membership.change(c.view, members)
    c.epoch += 1
    c.fresh = False  # the peers file, not a peer, says what this node's ring is
    log.info(
        "membership changed (epoch %d, phase %s): %s",
        c.epoch,
        c.view.phase,
        ", ".join(c.view.target.ids),
    )
    ensure_driver(c)


def ensure_driver(c: Cluster) -> None:
    """Start the driver of the change in progress unless it runs already."""
    if c.view.phase == SETTLED or c.driver is not None:
        return
    c.rebalancing = True
    c.driver = c.spawn(_drive(c))


async def exchange_status(c: Cluster, view: View) -> None:
    """One STATUS round with every other member of the change (answers are recorded)."""
    body = membership.encode_status(c.status())
    futs = []
    for member_id in view.involved():
        member = c.member(member_id)
        if member_id != c.id and member is not None:
            futs.append(c.peers.status(member, body))
    for answer in await asyncio.gather(*futs, return_exceptions=True):
        if isinstance(answer, bytes):
            try:
                c.learn(membership.decode_status(answer))
            except membership.StatusError as exc:
                log.warning("ignoring a malformed status answer: %s", exc)


async def _drive(c: Cluster) -> None:
    try:
        while c.view.phase != SETTLED:
            view = c.view
            await exchange_status(c, view)
            if c.view is not view:
                continue
            target_fp = membership.fingerprint(view.target.members)
            if c.streamed_fp != target_fp and membership.all_joint(view, c.id, c.peer_status):
                if await _stream(c, view):
                    c.streamed_fp = target_fp
                continue
            nxt = membership.advance(view, c.id, c.drained(), c.peer_status)
            if nxt.phase == NEW and membership.everyone_new(nxt, c.id, c.peer_status):
                nxt = View(view.target)
            if nxt != view:
                c.view = nxt
                log.info("membership change (epoch %d): phase %s", c.epoch, nxt.phase)
                continue
            c.status_changed.clear()
            try:
                await asyncio.wait_for(c.status_changed.wait(), STATUS_INTERVAL)
            except TimeoutError:
                pass
        c.rebalanced_epoch = c.epoch
    finally:
        c.driver = None
        c.rebalancing = c.view.phase != SETTLED


async def _stream(c: Cluster, view: View) -> bool:
    """Send every record this node holds to the owners it gained; False if the view changed
    meanwhile (a newer change streams again)."""
    old = view.previous[0] if len(view.previous) == 1 else Ring(())
    new = view.target
    span = None
    if telemetry.ENABLED:
        span = telemetry.start(
            "kvstore.rebalance",
            telemetry.INTERNAL,
            {
                "kvstore.operation": "rebalance",
                "kvstore.members": len(new.members),
                "kvstore.epoch": c.epoch,
            },
        )
    sent = 0
    trace = telemetry.w3c_headers(span) if span is not None else ("", "")
    try:
        await c.store.apply([])  # writes queued before this point are committed: the scan sees them
        for page in c.store.scan():
            for target, records in moves(page, old, new, c.id, c.rf).items():
                member = new.member(target)
                assert member is not None
                for batch in batches(records):
                    try:
                        await c.peers.put(member, batch, "rebalance", trace)
                        sent += len(batch)
                    except PeerError as exc:
                        log.warning(
                            "rebalance to %s failed (%s): kept as hints", target, exc.reason
                        )
                        await c.store.add_hints(target, batch)
            if c.view.target is not new:
                return False
        c.metrics.rebalanced.inc(amount=sent)
        return True
    finally:
        if span is not None:
            span.set_attribute("kvstore.records", sent)
            span.end()
