"""Peer protocol versions (rolling upgrades): a cluster mixing this build with the previous
one (it speaks only the version before this build's newest: no KEEP frames) works; a member
without a common version is refused with a log line and a metric, and calls to it fail naming
the reason. ~20 s."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from kvharness import Harness, Node, all_readable, http, wait_until, write_keys

from kvnode.transport import frames

pytestmark = pytest.mark.dataplane


def test_a_mixed_version_cluster_serves_and_an_incompatible_member_is_refused(
    kv_cluster: Callable[..., Harness],
) -> None:
    h = kv_cluster(3)
    a, b, c = h.nodes
    # roll c to the previous build: it speaks only the version before this build's newest
    previous = frames.PROTOCOL[1] - 1
    c.terminate()
    c.extra_env["KVNODE_FAULTS"] = f"protocol:{previous}-{previous}"
    c.start()
    data = write_keys(c, "mixed/c", 20, "all")  # c -> a, b: the older side calls
    data.update(write_keys(a, "mixed/a", 20, "all"))  # a -> c: negotiated down to `previous`
    for node in (a, b, c):
        assert all_readable(node, data, "all")
    assert _handshakes(a, "client", "ok") >= 1 and _handshakes(a, "server", "ok") >= 1
    assert _handshakes(c, "server", "ok") >= 1
    # a member from a future build that no longer speaks this build's versions is refused
    c.terminate()
    far = frames.PROTOCOL[1] + 2
    c.extra_env["KVNODE_FAULTS"] = f"protocol:{far}-{far}"
    c.start()
    assert a.put("mixed/q", b"1", "quorum")[0] == 204, "a and b still make a quorum"
    status, _, body = a.put("mixed/all", b"1", "all")
    assert status == 503
    assert frames.REFUSED in json.loads(body)["failures"][c.id]
    wait_until(
        lambda: (
            _handshakes(a, "client", "refused") >= 1 and _handshakes(c, "server", "refused") >= 1
        ),
        10,
        what="refusals counted",
    )
    assert frames.REFUSED in (h.root / f"{a.id}.log").read_text()
    assert "refusing the peer connection" in (h.root / f"{c.id}.log").read_text()


def _handshakes(node: Node, side: str, result: str) -> float:
    text = http("GET", node.url + "/metrics")[2].decode()
    needle = f'kvnode_peer_handshakes_total{{side="{side}",result="{result}"}} '
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(needle)
    )
