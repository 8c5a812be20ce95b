"""Membership changes through the peers file: 3 → 5 → 3 with every key still readable."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from kvharness import Harness, Node, wait_until, write_keys
from workload import Workload

pytestmark = pytest.mark.dataplane


def settled(nodes: list[Node], members: int) -> bool:
    views = [n.cluster() for n in nodes]
    return all(
        len(v["members"]) == members
        and not v["rebalancing"]
        and v["rebalanced_epoch"] == v["epoch"]
        and not v["hints_pending"]
        for v in views
    )


def test_scale_out_and_in_keeps_every_key(kv_cluster: Callable[..., Harness]) -> None:
    h = kv_cluster(3)
    data = write_keys(h.nodes[0], "scale", 150)

    # 3 → 5: the operator rewrites the peers file, then starts the new members
    new = h.add(2)
    h.write_peers(h.nodes)
    for n in new:
        n.start()
    wait_until(lambda: settled(h.nodes, 5), 30, interval=0.2, what="5 members rebalanced")
    moved = sum(n.cluster()["keys"] for n in new)
    assert moved > 0, "the new members received keys"
    # streamed directly, or kept as hints while the new members were still starting
    streamed = sum(
        n.metric("kvnode_rebalance_records_total") + n.metric("kvnode_hints_delivered_total")
        for n in h.nodes
    )
    assert streamed >= moved
    for node in h.nodes:
        bad = [k for k, v in data.items() if node.get(k, "quorum")[2] != v]
        assert not bad, f"{node.id} cannot read {len(bad)} keys after scale-out"
    for n in new:  # each new member owns a share of the keys
        assert n.cluster()["keys"] >= 0.3 * len(data)

    # 5 → 3: the file shrinks; leaving members drain to the remaining owners, then stop
    h.write_peers(h.nodes[:3])
    wait_until(lambda: settled(h.nodes, 3), 30, interval=0.2, what="3 members rebalanced")
    for n in new:
        assert n.cluster()["member"] is False
        assert n.terminate() == 0
    for node in h.nodes[:3]:
        assert node.cluster()["keys"] == len(data)
        bad = [k for k, v in data.items() if node.get(k, "one")[2] != v]
        assert not bad, f"{node.id} is missing {len(bad)} keys after scale-in"


def test_no_quorum_read_misses_an_acknowledged_key_while_members_join_and_leave(
    kv_cluster: Callable[..., Harness],
) -> None:
    """3 members, N=2, scaled to 5 and back under QUORUM reads and writes, the new
    member list reaching the nodes seconds apart (as a ConfigMap update reaches pods). Before
    pending ranges, reads through the nodes that knew the new ring asked only the new owners,
    which did not have the data yet: 404s and older versions for acknowledged keys (3 404s
    and 11 stale reads in one run on the code before the fix, dozens in another). ~40 s."""
    h = kv_cluster(3, own_peers_files=True, KVNODE_REPLICATION_FACTOR="2")
    old = list(h.nodes)
    up = [n.url for n in h.nodes]
    load = Workload(lambda: up, keys=1500, clients=8, write_ratio=0.3, seed=14, max_seconds=120)
    load.preload(h.nodes[0].url)
    load.start()
    try:
        wait_until(lambda: load.counts.reads > 300, 20, what="load running")
        new = h.add(2)  # 3 -> 5: the new members and one old member learn it first
        h.write_peers(h.nodes, to=[*new, old[0]])
        for n in new:
            n.start()
        up += [n.url for n in new]
        _load_for(load, 2.0)
        h.write_peers(h.nodes, to=old[1:])
        wait_until(lambda: settled(h.nodes, 5), 40, interval=0.2, what="5 members settled")
        _load_for(load, 1.0)
        h.write_peers(old, to=old[:2])  # 5 -> 3: two of the remaining members learn it first
        _load_for(load, 2.0)
        h.write_peers(old, to=[old[2], *new])
        wait_until(lambda: settled(h.nodes, 3), 40, interval=0.2, what="3 members settled")
        del up[3:]  # leaving members stop once every member settled
        for n in new:
            assert n.terminate() == 0
        _load_for(load, 1.0)
    finally:
        counts = load.stop()
    print(f"scale 3->5->3 under load: {counts.summary()}")
    assert counts.reads > 1000 and counts.acked > 300
    missing = counts.missing
    assert not missing, f"{len(missing)} QUORUM reads of acknowledged keys gave 404: {missing[:5]}"
    assert not counts.stale, counts.stale[:5]
    lost = load.lost(lambda key: h.nodes[0].get(key, "quorum"))
    print(f"lost={len(lost)} same-version ties={len(load.ties)}")
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"


def _load_for(load: Workload, seconds: float) -> None:
    """Let the workload run for a while (it runs on its own thread; nothing to poll)."""
    reads = load.counts.reads
    wait_until(lambda: load.counts.reads > reads + 50, 20, what="load progressing")
    time.sleep(seconds)  # the skew: how long the new member list takes to reach the others
