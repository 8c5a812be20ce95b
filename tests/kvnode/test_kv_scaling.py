"""Membership changes through the peers file: 3 → 5 → 3 with every key still readable."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kvharness import Harness, Node, wait_until, write_keys

pytestmark = pytest.mark.dataplane


def settled(nodes: list[Node], members: int) -> bool:
    views = [n.cluster() for n in nodes]
    return all(len(v["members"]) == members and not v["rebalancing"] and v["rebalanced_epoch"] == v["epoch"]
               and not v["hints_pending"] for v in views)


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
    streamed = sum(n.metric("kvnode_rebalance_records_total") + n.metric("kvnode_hints_delivered_total") for n in h.nodes)
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
