"""Failures on a real cluster: SIGKILL under load, hinted handoff, anti-entropy, lost disks."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import pytest
from kvharness import Harness, Node, all_readable, wait_until, write_keys

from kvnode.client import ClientError, KVClient

pytestmark = pytest.mark.dataplane


async def _write_stream(
    coordinators: list[Node], victim: Node, total: int, seconds: float
) -> tuple[dict[str, bytes], int]:
    """Bounded QUORUM write stream; SIGKILLs `victim` once a quarter is acknowledged.
    Returns the acknowledged writes and how many of them came after the kill."""
    acked: dict[str, bytes] = {}
    after_kill = 0
    counter = iter(range(total))
    deadline = time.monotonic() + seconds
    killed = asyncio.Event()

    async def writer(n: int) -> None:
        nonlocal after_kill
        client = KVClient(coordinators[n % len(coordinators)].url, timeout=5)
        try:
            for i in counter:
                if time.monotonic() > deadline:
                    return
                key, value = f"stream/{i}", f"v{i}".encode()
                try:
                    resp = await client.put(key, value, "quorum")
                except ClientError:
                    continue
                if resp.status == 204:
                    acked[key] = value
                    after_kill += killed.is_set()
                if len(acked) >= total // 4 and not killed.is_set():
                    killed.set()
                    victim.kill()
        finally:
            client.close()

    await asyncio.gather(*(writer(n) for n in range(8)))
    assert killed.is_set(), "the stream ended before the kill"
    return acked, after_kill


def test_sigkill_during_quorum_writes_loses_no_acknowledged_write(
    kv_cluster: Callable[..., Harness],
) -> None:
    a, b, c = kv_cluster(3).nodes
    acked, after_kill = asyncio.run(_write_stream([a, b], c, total=1200, seconds=30))
    assert after_kill >= 50, "QUORUM writes keep succeeding with one replica down"
    for node in (a, b):
        missing = [k for k, v in acked.items() if node.get(k, "quorum")[2] != v]
        assert not missing, f"{len(missing)} acknowledged writes lost via {node.id}: {missing[:5]}"
    c.start()
    sample = dict(list(acked.items())[:200])
    assert all_readable(c, sample, "quorum")


def test_hinted_handoff_delivers_after_restart(kv_cluster: Callable[..., Harness]) -> None:
    a, b, c = kv_cluster(3).nodes
    c.kill()
    data = write_keys(a, "hinted", 60)
    # hints are written right after the QUORUM answer, by the write's background half
    wait_until(lambda: a.cluster()["hints_pending"] == {c.id: 60}, 10, what="60 hints stored")
    assert a.metric("kvnode_hints_pending") == 60
    c.start()
    wait_until(lambda: a.cluster()["hints_pending"] == {}, 20, what="hints replayed")
    wait_until(lambda: a.metric("kvnode_hints_delivered_total") == 60, 10, what="delivery counted")
    assert all_readable(c, data, "one"), "c holds every key it missed (anti-entropy is off here)"


def test_anti_entropy_repairs_divergent_replicas(kv_cluster: Callable[..., Harness]) -> None:
    a, b, c = kv_cluster(3, KVNODE_ANTI_ENTROPY_INTERVAL="1s", KVNODE_HINTED_HANDOFF="false").nodes
    c.kill()
    data = write_keys(a, "diverged", 60)
    assert a.cluster()["hints_pending"] == {}
    c.start()
    wait_until(lambda: all_readable(c, data, "one"), 20, interval=0.3, what="anti-entropy repair")
    assert (
        c.metric("kvnode_anti_entropy_repairs_total")
        + a.metric("kvnode_anti_entropy_repairs_total")
        + b.metric("kvnode_anti_entropy_repairs_total")
        >= 60
    )


def test_node_with_wiped_data_dir_recovers_from_peers(kv_cluster: Callable[..., Harness]) -> None:
    a, b, c = kv_cluster(3, KVNODE_ANTI_ENTROPY_INTERVAL="1s").nodes
    data = write_keys(a, "wiped", 60, "all")
    c.kill()
    c.wipe()
    c.start()
    wait_until(lambda: all_readable(c, data, "one"), 20, interval=0.3, what="recovery from peers")
    assert c.cluster()["keys"] == 60


def test_read_repair_fixes_a_stale_replica(kv_cluster: Callable[..., Harness]) -> None:
    a, b, c = kv_cluster(
        3, KVNODE_HINTED_HANDOFF="false"
    ).nodes  # anti-entropy is off by default here
    c.kill()
    data = write_keys(a, "repair", 20)
    c.start()
    assert not any(c.get(k, "one")[0] == 200 for k in data), "c missed the writes"
    for key, value in data.items():
        assert c.get(key, "all")[2] == value  # c coordinates: its own stale copy loses
    wait_until(lambda: all_readable(c, data, "one"), 10, what="read repair")
    assert c.metric("kvnode_read_repairs_total") >= len(data)


def test_sigterm_during_writes_is_graceful(kv_cluster: Callable[..., Harness]) -> None:
    a, b, _ = kv_cluster(3).nodes

    async def stream() -> tuple[dict[str, bytes], list[int]]:
        acked: dict[str, bytes] = {}
        statuses: list[int] = []
        counter = iter(range(3000))
        deadline = time.monotonic() + 20

        async def writer() -> None:
            client = KVClient(a.url, timeout=5)
            try:
                for i in counter:
                    if time.monotonic() > deadline:
                        return
                    try:
                        resp = await client.put(f"term/{i}", b"v", "quorum")
                    except ClientError:
                        return  # the node stopped accepting: this client is done
                    statuses.append(resp.status)
                    if resp.status == 204:
                        acked[f"term/{i}"] = b"v"
                    if len(acked) == 200:
                        a.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            finally:
                client.close()

        await asyncio.gather(*(writer() for _ in range(4)))
        return acked, statuses

    acked, statuses = asyncio.run(stream())
    assert a.proc is not None and a.proc.wait(timeout=15) == 0
    assert len(acked) >= 200 and set(statuses) <= {204, 503}
    missing = [k for k in acked if b.get(k, "quorum")[0] != 200]
    assert not missing, f"{len(missing)} acknowledged writes lost across a graceful stop"
