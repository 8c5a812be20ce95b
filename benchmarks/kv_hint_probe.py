"""Benchmark: the CPU of one `Cluster.drained()` hint check on the event loop, counting every
pending hint (GROUP BY, the code before) against one index probe (`Store.has_hints`).

    .venv/bin/python benchmarks/kv_hint_probe.py > benchmarks/results/kv-hint-probe-DATE.json

Every STATUS round between members calls it; with a member down, hints pile up for it.
Prints one JSON document: µs of process CPU per check at 0, 1,000 and 20,000 pending hints.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable

from kvnode import implementation
from kvnode.storage.engine import Store
from kvnode.storage.records import Record

TARGETS = ("n1", "n2", "n3")  # the ring's members; the hints wait for n4, which left


def cpu_us(check: Callable[[], bool], repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        check()
    return round((time.process_time() - start) / repeat * 1e6, 1)


async def measure(data_dir: str) -> dict[str, float]:
    store = Store(data_dir)
    try:
        return await _checks(store)
    finally:
        store.close()


async def _checks(store: Store) -> dict[str, float]:
    out: dict[str, float] = {}
    for pending in (0, 1_000, 20_000):
        have = sum(store.hint_counts().values())
        records = [Record(b"k%d" % i, b"v" * 100, i + 1) for i in range(have, pending)]
        if records:
            await store.add_hints("n4", records)
        repeat = 200 if pending >= 20_000 else 2_000
        out[f"group_by@{pending}"] = cpu_us(
            lambda: not any(store.hint_counts().get(m) for m in TARGETS), repeat
        )
        out[f"has_hints@{pending}"] = cpu_us(lambda: not store.has_hints(TARGETS), repeat)
    return out


def main() -> int:
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kvhints-") as tmp:
        cpu = asyncio.run(measure(tmp))
    doc = {
        "command": "benchmarks/kv_hint_probe.py",
        "hot_path": implementation.active(),
        "load_at_start": load,
        "cpu_us_per_check": cpu,
    }
    json.dump(doc, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
