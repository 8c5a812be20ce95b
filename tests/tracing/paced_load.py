"""A paced (open-loop) KV load with per-operation latencies, for comparing clusters side by side.

A closed loop (each client sends its next request when the last one answers) measures
throughput under saturation: its latency is "clients / throughput" and moves with whatever
else uses the CPU. A paced load sends operation ``i`` at ``start + i / rate`` whatever
happened before, so at a rate well below capacity the latency is the node's own service time
plus its stalls; it is measured from the intended send time, so a stall also counts against
every operation that should have been sent during it (no coordinated omission).

:func:`paced_load` drives several clusters at once with the same plan and the same send
times: on a shared machine, whatever else runs slows them alike, so comparing them in one
run is far steadier than comparing two runs one after the other.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kvnode.client import ClientError, Connection, kv_path


@dataclass
class Phase:
    """One cluster's share of a load: latencies in seconds of the operations that succeeded."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # of the cluster's node processes, during the load

    def quantile(self, q: float) -> float:
        return quantile(self.latencies, q)

    @property
    def cpu_us_per_op(self) -> float:
        return self.cpu_seconds / max(1, len(self.latencies)) * 1e6


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU so far of processes ``pids`` (all their threads), from /proc."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """A cluster to load: its client URLs and the pids whose CPU time to record."""

    name: str
    urls: Sequence[str]
    pids: Sequence[int] = ()


def paced_load(
    targets: Sequence[Target],
    *,
    ops: int,
    rate: float,
    clients: int = 8,
    write_ratio: float = 0.5,
    keys: int = 500,
    seed: int = 1,
    timeout: float = 120,
) -> dict[str, Phase]:
    """``ops`` QUORUM writes and reads (``write_ratio``) of ``load/0..keys-1`` at ``rate`` per
    second to every target, the same operation to each at the same moment; within a target
    spread round-robin over its URLs on ``clients`` keep-alive connections (operation i goes to
    client ``i % clients``). Bounded: the load stops after ``timeout`` seconds; operations not
    sent by then count as errors. A read of a key not written yet (404) is a success."""
    phases = {t.name: Phase(t.name) for t in targets}
    rng = random.Random(seed)
    plan = [(rng.random() < write_ratio, f"load/{rng.randrange(keys)}") for _ in range(ops)]
    value = b"v" * 100

    async def main() -> None:
        start = time.perf_counter()
        deadline = start + timeout

        async def client(target: Target, n: int) -> None:
            phase = phases[target.name]
            conn = Connection(target.urls[n % len(target.urls)], timeout=15)
            try:
                for i in range(n, ops, clients):
                    due = start + i / rate
                    if due > deadline:
                        phase.errors.append(f"op {i} not sent: the load ran out of time")
                        continue
                    if (wait := due - time.perf_counter()) > 0:
                        await asyncio.sleep(wait)
                    write, key = plan[i]
                    try:
                        resp = await conn.request(
                            "PUT" if write else "GET",
                            kv_path(key, "quorum"),
                            value if write else b"",
                        )
                    except ClientError as exc:
                        phase.errors.append(str(exc))
                        continue
                    if resp.status in (200, 204) or (resp.status == 404 and not write):
                        phase.latencies.append(time.perf_counter() - due)
                    else:
                        phase.errors.append(f"{resp.status} {resp.body[:120]!r}")
            finally:
                conn.close()

        await asyncio.gather(*(client(t, n) for t in targets for n in range(clients)))

    cpu0 = {t.name: cpu_seconds(t.pids) for t in targets}
    asyncio.run(main())
    for t in targets:
        phases[t.name].cpu_seconds = cpu_seconds(t.pids) - cpu0[t.name]
    return phases


def pooled(phases: Sequence[Phase], q: float) -> float:
    return quantile([x for p in phases for x in p.latencies], q)


# One-sided 95% quantiles of Student's t by degrees of freedom (rounds - 1).
# one-sided 95% Student t by degrees of freedom; beyond 30, 30's (a little wider than the truth)
_T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833}
_T95 |= {10: 1.812, 11: 1.796, 12: 1.782, 13: 1.771, 14: 1.761, 15: 1.753, 16: 1.746}
_T95 |= {17: 1.740, 18: 1.734, 19: 1.729, 20: 1.725, 21: 1.721, 22: 1.717, 23: 1.714}
_T95 |= {24: 1.711, 25: 1.708, 26: 1.706, 27: 1.703, 28: 1.701, 29: 1.699, 30: 1.697}


@dataclass
class RatioEstimate:
    """Geometric mean of paired ratios and its one-sided 95% confidence bounds (t on logs)."""

    ratios: list[float]
    point: float
    low: float  # the ratio is above this with 95% confidence
    high: float  # the ratio is below this with 95% confidence


def ratio_estimate(ratios: Sequence[float]) -> RatioEstimate:
    """Paired ratios (one per round, both sides measured in the same seconds) summarised on a
    log scale: a load swing scales both sides of a round alike, so it cancels in the ratio;
    what remains is each round's own noise, which the rounds' spread measures."""
    logs = [math.log(r) for r in ratios]
    mean, margin = (
        statistics.fmean(logs),
        _T95.get(len(logs) - 1, _T95[30]) * statistics.stdev(logs) / math.sqrt(len(logs)),
    )
    return RatioEstimate(
        list(ratios), math.exp(mean), math.exp(mean - margin), math.exp(mean + margin)
    )
