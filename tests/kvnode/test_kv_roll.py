"""Rolls that keep quorum: a restarted member is ready only once it caught up (no peer holds
hints for it), and a roll that waits for readiness, as a StatefulSet's OrderedReady
RollingUpdate does, fails no QUORUM operation (docs/operator.md, "Rolling updates").

Durations here (2 busy cores): ~10 s and ~30 s.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import pytest
from kvharness import Harness, Node, http, wait_until, write_keys

pytestmark = pytest.mark.dataplane


def test_a_restarted_member_is_not_ready_until_its_hints_are_delivered(
    kv_cluster: Callable[..., Harness],
) -> None:
    # kv-1 replays its hints only every 3 s: the restarted kv-0 must wait for them.
    h = kv_cluster(3)
    a, b = h.nodes[0], h.nodes[1]
    b.terminate()
    b.extra_env["KVNODE_HINT_INTERVAL"] = "3s"
    b.start()
    a.terminate()
    missed = write_keys(b, "missed", 20)  # acknowledged by kv-1 and kv-2, hints for kv-0
    wait_until(
        lambda: b.cluster()["hints_pending"].get("kv-0", 0) > 0,
        10,
        what="kv-1 holds hints for kv-0",
    )
    a.start(wait=False)
    seen: list[tuple[int, int]] = []  # (kv-0's /readyz, kv-1's hints for kv-0)

    def ready() -> bool:
        try:
            status = a.http("GET", "/readyz", timeout=2)[0]
        except OSError:
            return False  # not listening yet
        seen.append((status, b.cluster()["hints_pending"].get("kv-0", 0)))
        return status == 200

    wait_until(ready, 30, what="kv-0 ready again")
    assert any(status == 503 and held > 0 for status, held in seen), seen
    assert b.cluster()["hints_pending"].get("kv-0", 0) == 0, (
        "ready only after the hints were delivered"
    )
    view = a.cluster()
    assert view["caught_up"] is True and view["catching_up"] == {}
    assert all(a.get(k, "one")[2] == v for k, v in missed.items()), "kv-0 has every write it missed"
    assert a.metric("kvnode_caught_up") == 1


def test_config_change_roll_under_load_fails_no_quorum_operation(
    kv_cluster: Callable[..., Harness],
) -> None:
    """Each member restarts with a changed setting (highest ordinal first), and the next one
    only once the previous is ready, as the StatefulSet controller rolls; clients whose
    connection a stopping member closes reconnect to another member, as through a Service."""
    h = kv_cluster(3)
    stop = threading.Event()
    acked: dict[str, bytes] = {}
    failed: list[str] = []
    counts = {"ops": 0, "reconnects": 0}
    lock = threading.Lock()

    def request(n: int, method: str, key: str, body: bytes | None) -> tuple[int, bytes]:
        for attempt in range(len(h.nodes) * 2):  # a refused or reset connection: the next member
            node = h.nodes[(n + attempt) % len(h.nodes)]
            try:
                status, _, answer = http(method, node.kv_url(key, "quorum"), body, timeout=10)
                return status, answer
            except OSError:
                with lock:
                    counts["reconnects"] += 1
                time.sleep(0.05)
        return 0, b"no member answered"

    def client(n: int) -> None:
        for i in itertools.count():
            if stop.is_set() or i >= 5000:
                return
            key, value = f"roll/{n}/{i}", f"v{i}".encode()
            status, answer = request(n, "PUT", key, value)
            read = request(n + 1, "GET", key, None) if status == 204 else (0, b"")
            with lock:
                counts["ops"] += 2
                if status != 204:
                    failed.append(f"PUT {key}: {status} {answer[:200]!r}")
                elif read[0] != 200 or read[1] != value:
                    failed.append(f"GET {key}: {read[0]} {read[1][:200]!r}")
                else:
                    acked[key] = value

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        for node in reversed(h.nodes):  # the StatefulSet rolls from the highest ordinal
            assert node.terminate() == 0
            node.extra_env["KVNODE_ANTI_ENTROPY_INTERVAL"] = "45s"  # the "config change"
            node.start()  # waits for /readyz: the controller's wait for Ready
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    print(
        f"roll under load: {counts['ops']} QUORUM operations, {len(failed)} failed, "
        f"{counts['reconnects']} reconnects, {len(acked)} acknowledged writes"
    )
    assert not failed, failed[:5]
    assert counts["ops"] > 100
    survivors: list[Node] = h.nodes
    for node in survivors:
        lost = [k for k, v in acked.items() if node.get(k, "quorum")[2] != v]
        assert not lost, f"{node.id}: {len(lost)} acknowledged writes unreadable"
