"""A bounded Jepsen-style fault run (dataplane tier, about two minutes): concurrent QUORUM
writes and reads over a fixed key set while a nemesis applies a random schedule of kill -9,
SIGSTOP/SIGCONT, graceful restarts and one-way and two-way partitions (through the nodes'
test-only `--faults partitions:PATH` hook on the peer transport), with the cluster scaled
3 -> 5 -> 3 in the middle; then everything is healed and checked:

- no QUORUM read of an acknowledged key answered 404 or a version older than one acknowledged
  before the read started, while the run was going;
- every acknowledged write is readable at QUORUM with its acknowledged value or a later one;
- the replicas converge (every node's own copy of every key is the same) within the
  anti-entropy interval + 10 s.

The counts and the schedule's seed are printed; `KVTRACE_FAULT_SEED=N` replays a schedule.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kvharness import Harness, Node, http, wait_until
from test_kv_scaling import settled
from workload import Workload

pytestmark = pytest.mark.dataplane

ANTI_ENTROPY = 2.0  # seconds
STEPS = 4  # nemesis steps per stage (3 stages: 3 members, 5 members, 3 members again)


class Nemesis:
    """Applies one fault at a time to the cluster's running members and heals it."""

    def __init__(self, h: Harness, up: list[str], partitions: Path, rng: random.Random):
        self.h, self.up, self.partitions, self.rng = h, up, partitions, rng
        self.faults: list[str] = []

    def step(self, members: list[Node]) -> None:
        kind = self.rng.choice(
            ["kill", "pause", "restart", "partition-one-way", "partition-two-way"]
        )
        victim = self.rng.choice(members)
        hold = self.rng.uniform(0.5, 2.0)
        if kind.startswith("partition"):
            other = self.rng.choice([n for n in members if n is not victim])
            edges = [(victim, other)] + ([(other, victim)] if kind.endswith("two-way") else [])
            self.faults.append(f"{kind} {victim.id}->{other.id} {hold:.1f}s")
            self.partitions.write_text("".join(f"{a.id} {b.id}\n" for a, b in edges))
            time.sleep(hold)  # the fault's duration
            self.partitions.write_text("")
        else:
            self.faults.append(f"{kind} {victim.id} {hold:.1f}s")
            self.up.remove(victim.url)
            assert victim.proc is not None
            if kind == "kill":
                victim.kill()
                time.sleep(hold)  # down for a while
                victim.start()
            elif kind == "pause":
                victim.proc.send_signal(signal.SIGSTOP)
                time.sleep(hold)  # paused for a while
                victim.proc.send_signal(signal.SIGCONT)
                victim.wait_ready()
            else:
                assert victim.terminate() == 0
                victim.start()
            self.up.append(victim.url)
        time.sleep(self.rng.uniform(0.2, 1.0))  # quiet time between faults


def _own_copies(nodes: list[Node], keys: list[str]) -> bool:
    """Every node holds the same version of every key (ONE reads at each node, which is a
    replica of every key here: N=3 on 3 members)."""
    for key in keys:
        versions = {n.get(key, "one")[1].get("X-KV-Version") for n in nodes}
        if len(versions) != 1 or None in versions:
            return False
    return True


def test_acknowledged_writes_survive_a_random_fault_schedule(
    kv_cluster: Callable[..., Harness], tmp_path: Path
) -> None:
    seed = int(os.environ.get("KVTRACE_FAULT_SEED") or random.randrange(1 << 32))
    print(f"fault schedule seed {seed} (replay: KVTRACE_FAULT_SEED={seed})")
    rng = random.Random(seed)
    partitions = tmp_path / "partitions"
    partitions.write_text("")
    h = kv_cluster(
        3,
        KVNODE_FAULTS=f"partitions:{partitions}",
        KVNODE_PEER_TIMEOUT="1s",
        KVNODE_ANTI_ENTROPY_INTERVAL=f"{ANTI_ENTROPY:g}s",
    )
    up = [n.url for n in h.nodes]
    load = Workload(
        lambda: list(up), keys=200, clients=6, write_ratio=0.4, seed=seed, max_seconds=240
    )
    load.preload(h.nodes[0].url)
    nemesis = Nemesis(h, up, partitions, rng)
    started = time.monotonic()
    load.start()
    try:
        for _ in range(STEPS):
            nemesis.step(h.nodes)
        new = h.add(2)  # 3 -> 5
        h.write_peers(h.nodes)
        for n in new:
            n.start()
        up += [n.url for n in new]
        wait_until(lambda: settled(h.nodes, 5), 60, interval=0.3, what="5 members settled")
        for _ in range(STEPS):
            nemesis.step(h.nodes)
        h.write_peers(h.nodes[:3])  # 5 -> 3
        wait_until(lambda: settled(h.nodes, 3), 60, interval=0.3, what="3 members settled")
        for n in new:
            up.remove(n.url)
            assert n.terminate() == 0
        for _ in range(STEPS):
            nemesis.step(h.nodes[:3])
    finally:
        partitions.write_text("")
        counts = load.stop()
    nodes = h.nodes[:3]
    healed = time.monotonic()
    wait_until(
        lambda: _own_copies(nodes, load.keys),
        ANTI_ENTROPY + 10,
        interval=0.5,
        what="replicas converged within the anti-entropy interval + 10 s",
    )
    converged = time.monotonic() - healed
    lost = load.lost(lambda key: nodes[0].get(key, "quorum"))
    print(f"faults ({len(nemesis.faults)}): {'; '.join(nemesis.faults)}")
    print(
        f"operations={counts.reads + counts.writes} {counts.summary()} lost={len(lost)} ties={len(load.ties)} "
        f"converged in {converged:.1f}s, run {healed - started:.0f}s, seed {seed}"
    )
    assert counts.reads > 500 and counts.acked > 300, "the workload ran"
    assert not counts.missing, f"QUORUM reads of acknowledged keys gave 404: {counts.missing[:5]}"
    assert not counts.stale, f"QUORUM reads older than an acknowledged write: {counts.stale[:5]}"
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    assert all(http("GET", n.url + "/readyz")[0] == 200 for n in nodes)
