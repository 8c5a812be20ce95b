"""Catching up after a start: a restarted member is not ready until its peers hold no hints
for it, so a rolling restart (one member at a time, each waiting for the previous one to be
ready) never takes down the next member while the previous one still misses writes.

The node asks every other member of its ring how many hints it holds for it (PING carrying
the asker's id; a member of an older build answers nothing, which counts as none). A member
that cannot be reached holds nothing it could deliver either (and in a roll every other member
is up), so it does not hold the start up. Once every member answered 0 the node is caught up,
for good: hints that come and go later (a slow replica) never take it out of the Service.
Bounded by ``timeout``: then it becomes ready anyway and says so (the hints are delivered
later and anti-entropy repairs the rest), so a peer that cannot deliver never blocks a roll
forever. Never imports the transport or the process layer.
"""

from __future__ import annotations

import asyncio
import logging
import time

from kvnode.replication.cluster import Cluster
from kvnode.replication.peers import PeerError

log = logging.getLogger("kvnode")


# Longer than the peer client's backoff after a refused connection (0.5 s): a peer that was
# not listening yet when asked is not still marked down when this node turns ready.
RETRY_UNREACHABLE = 0.6


async def pending_for_me(cluster: Cluster) -> tuple[dict[str, int], int]:
    """Hints each reachable peer holds for this node (peers that hold none left out), and how
    many peers could not be asked."""
    peers = [m for m in cluster.ring.members if m.id != cluster.id]
    answers = await asyncio.gather(
        *(cluster.peers.hints_held(m, cluster.id) for m in peers), return_exceptions=True
    )
    held = {}
    unreachable = 0
    for member, answer in zip(peers, answers, strict=True):
        if isinstance(answer, PeerError):
            unreachable += 1  # it cannot deliver anything now either
        elif isinstance(answer, BaseException):
            raise answer
        elif answer:
            held[member.id] = answer
    return held, unreachable


async def catch_up(cluster: Cluster, interval: float, timeout: float) -> None:
    """Poll the peers until none holds hints for this node, then mark it caught up."""
    if timeout <= 0:
        cluster.caught_up = True
        return
    deadline = time.monotonic() + timeout
    retried = False
    while True:
        held, unreachable = await pending_for_me(cluster)
        cluster.catching_up = held
        if not held and unreachable and not retried:
            retried = True  # once more after the backoff: it may just have started
            await asyncio.sleep(RETRY_UNREACHABLE)
            continue
        if not held:
            break
        if time.monotonic() >= deadline:
            log.warning(
                "ready without having caught up after %gs: peers still hold hints for this node %s",
                timeout,
                held,
            )
            break
        await asyncio.sleep(interval)
    cluster.caught_up = True
    log.info("caught up: no peer holds hints for this node")
