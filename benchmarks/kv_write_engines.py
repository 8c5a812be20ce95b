"""Storage engines for the node's write path, measured alone (no HTTP, no peers).

Each candidate runs in a fresh interpreter: `--clients` concurrent writers on one event loop
each apply one 100-byte record at a time (keys drawn uniformly from `--keys`, like the KV
benchmark's preloaded set) for `--duration` seconds, as a replica's store sees them. Reported:
records/s, the process's CPU µs per record (user + system: all threads, the fsync's kernel time
included), fsyncs per record, and the p50 / p99 of `apply` (queue to acknowledgement). Rounds
alternate between the candidates so each sees the same machine load; the median round is
reported.

Candidates: `commit-log` (the node's engine: a log with one append and one fdatasync per group
commit, SQLite as its checkpointed index), `sqlite-wal` (the engine before it: SQLite in WAL
mode with synchronous=FULL, taken from git at `--baseline`), and `lmdb` (the `lmdb` binding with
sync on, if it is importable; not a dependency of the node).

    .venv/bin/python benchmarks/kv_write_engines.py --rounds 3 --out benchmarks/results/kv-write-engines.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUNNER = r"""
import asyncio, importlib.util, json, os, random, resource, sys, time
sys.path.insert(0, sys.argv[1])
kind, data_dir, clients, duration, keys, engine_file = (
    sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
from kvnode.storage import Record

fsyncs = [0]
if kind == "lmdb":
    import threading, queue, lmdb

    class Store:
        # The node's writer-thread shape over LMDB: one write transaction (sync on) per batch,
        # last-write-wins by version decided inside it.
        def __init__(self, path):
            self.env = lmdb.open(path, map_size=1 << 30, sync=True, metasync=True)
            self.q = queue.SimpleQueue()
            threading.Thread(target=self.run, daemon=True).start()

        def run(self):
            while True:
                batch = [self.q.get()]
                while True:
                    try:
                        batch.append(self.q.get_nowait())
                    except queue.Empty:
                        break
                out = []
                with self.env.begin(write=True) as txn:
                    for rec, fut, loop in batch:
                        old = txn.get(rec.key)
                        won = old is None or int.from_bytes(old[:8], "big") < rec.version
                        if won:
                            txn.put(rec.key, rec.version.to_bytes(8, "big") + rec.value)
                        out.append((fut, loop, won))
                fsyncs[0] += 1
                out[0][1].call_soon_threadsafe(self.resolve, out)

        @staticmethod
        def resolve(out):
            for fut, _loop, won in out:
                if not fut.done():
                    fut.set_result([won])

        def apply(self, records):
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self.q.put((records[0], fut, loop))
            return fut

        def close(self):
            self.env.close()

    make = lambda: Store(data_dir)
else:
    spec = importlib.util.spec_from_file_location("candidate_engine", engine_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    make = lambda: mod.Store(data_dir, on_commit=lambda s: fsyncs.__setitem__(0, fsyncs[0] + 1))

async def main():
    store = make()
    value = b"v" * 100
    version = [1]
    # preload, as the KV benchmark does
    await asyncio.gather(*(store.apply([Record(b"key%06d" % i, value, i + 1)]) for i in range(keys)))
    version[0] = keys + 1
    lat = []
    stop = time.monotonic() + duration
    async def client(seed):
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            version[0] += 1
            t = time.perf_counter()
            await store.apply([Record(b"key%06d" % rnd.randrange(keys), value, version[0])])
            lat.append(time.perf_counter() - t)
    r0 = resource.getrusage(resource.RUSAGE_SELF); f0 = fsyncs[0]; t0 = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    r1 = resource.getrusage(resource.RUSAGE_SELF); f1 = fsyncs[0]; t1 = time.monotonic()
    store.close()
    n = len(lat)
    lat.sort()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({
        "records": n, "records_per_s": round(n / (t1 - t0), 1),
        "cpu_us_per_record": round(cpu / n * 1e6, 1),
        "system_cpu_us_per_record": round((r1.ru_stime - r0.ru_stime) / n * 1e6, 1),
        "commits_per_record": round((f1 - f0) / n, 4),
        "p50_ms": round(lat[n // 2] * 1e3, 3), "p99_ms": round(lat[int(n * 0.99)] * 1e3, 3),
    }))

asyncio.run(main())
"""


def baseline_engine(rev: str, tmp: str) -> str:
    text = subprocess.run(
        ["git", "-C", ROOT, "show", f"{rev}:kvnode/kvnode/storage/engine.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = os.path.join(tmp, "engine_baseline.py")
    with open(path, "w") as f:
        f.write(text)
    return path


def run_one(kind: str, engine: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kvwrite-", dir=args.dir) as data:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                RUNNER,
                os.path.join(ROOT, "kvnode"),
                kind,
                data,
                str(args.clients),
                str(args.duration),
                str(args.keys),
                engine,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--keys", type=int, default=2000)
    p.add_argument("--baseline", default="a90e9a6", help="git revision of the sqlite-wal engine")
    p.add_argument("--dir", default=None, help="where the data directories go (a real disk)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engines = {
            "commit-log": os.path.join(ROOT, "kvnode", "kvnode", "storage", "engine.py"),
            "sqlite-wal": baseline_engine(args.baseline, tmp),
        }
        try:
            import lmdb  # noqa: F401 - only whether it is there

            engines["lmdb"] = ""
        except ImportError:
            pass
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
        for i in range(args.rounds):
            order = list(engines) if i % 2 == 0 else list(reversed(engines))
            for name in order:
                kind = "lmdb" if name == "lmdb" else "sqlite"
                rounds[name].append(run_one(kind, engines[name], args))
                print(name, rounds[name][-1], file=sys.stderr, flush=True)
    summary = {}
    for name, rs in rounds.items():
        med = sorted(rs, key=lambda r: r["cpu_us_per_record"])[len(rs) // 2]
        summary[name] = {
            "median_round_by_cpu": med,
            "cpu_us_per_record_rounds": [r["cpu_us_per_record"] for r in rs],
            "records_per_s_rounds": [r["records_per_s"] for r in rs],
            "cpu_us_per_record_median": statistics.median(r["cpu_us_per_record"] for r in rs),
        }
    doc = {
        "benchmark": "benchmarks/kv_write_engines.py",
        "cpus": os.cpu_count(),
        "clients": args.clients,
        "duration_s": args.duration,
        "keys": args.keys,
        "value_bytes": 100,
        "baseline_rev": args.baseline,
        "results": summary,
        "rounds": rounds,
    }
    text = json.dumps(doc, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    print(f"{'engine':12} {'records/s':>10} {'CPU µs/rec':>11} {'p50 ms':>7} {'p99 ms':>7}")
    for name, s in summary.items():
        m = s["median_round_by_cpu"]
        print(
            f"{name:12} {m['records_per_s']:>10} {m['cpu_us_per_record']:>11} "
            f"{m['p50_ms']:>7} {m['p99_ms']:>7}"
        )


if __name__ == "__main__":
    main()
