"""`kvtrace bench`: a bounded load generator for kvtrace nodes (or etcd's JSON gateway).

Clients are coroutines, each with its own keep-alive connection, spread round-robin over
the endpoints. Stops at the op count or the duration, whichever comes first, and never
runs longer than MAX_DURATION. Reports ops/s and latency percentiles.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from kvnode.client import ClientError, Connection, Security, kv_path

MAX_DURATION = 600.0
MAX_KEYS = 1_000_000


@dataclass
class BenchConfig:
    endpoints: list[str]
    clients: int = 32
    duration: float = 10.0
    ops: int = 0  # 0 = until duration
    write_ratio: float = 0.5
    keys: int = 10_000
    distribution: str = "uniform"  # or zipfian
    zipf_s: float = 0.99
    value_size: int = 100
    consistency: str = "quorum"
    target: str = "kvtrace"  # or etcd
    key_prefix: str = "bench/"
    preload: bool = False
    timeout: float = 10.0
    seed: int = 1
    security: Security = Security()

    def validate(self) -> None:
        if not self.endpoints:
            raise ValueError("at least one endpoint")
        if not 1 <= self.clients <= 4096:
            raise ValueError("clients must be within 1..4096")
        if not 0 < self.duration <= MAX_DURATION:
            raise ValueError(f"duration must be within (0, {MAX_DURATION:g}] seconds")
        if not 0.0 <= self.write_ratio <= 1.0:
            raise ValueError("write ratio must be within 0..1")
        if not 1 <= self.keys <= MAX_KEYS:
            raise ValueError(f"keys must be within 1..{MAX_KEYS}")
        if self.distribution not in ("uniform", "zipfian"):
            raise ValueError("distribution must be uniform or zipfian")
        if self.target not in ("kvtrace", "etcd"):
            raise ValueError("target must be kvtrace or etcd")
        if self.value_size < 0 or self.ops < 0:
            raise ValueError("value size and ops must not be negative")


def key_sampler(cfg: BenchConfig, rng: random.Random) -> Callable[[], int]:
    """Key indices: uniform, or zipfian (rank r has weight 1/r^s, hot keys scattered)."""
    if cfg.distribution == "uniform":
        return lambda: rng.randrange(cfg.keys)
    weights = list(itertools.accumulate(1.0 / (r**cfg.zipf_s) for r in range(1, cfg.keys + 1)))
    order = list(range(cfg.keys))
    rng.shuffle(order)
    buffer: list[int] = []

    def sample() -> int:
        if not buffer:
            buffer.extend(
                order[i]
                for i in _bisect_many(weights, [rng.random() * weights[-1] for _ in range(1024)])
            )
        return buffer.pop()

    return sample


def _bisect_many(cum: list[float], points: list[float]) -> list[int]:
    import bisect

    return [min(bisect.bisect_left(cum, p), len(cum) - 1) for p in points]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[idx]


@dataclass
class Result:
    target: str
    clients: int
    seconds: float
    ops: int
    errors: int
    ops_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    by_operation: dict[str, dict[str, float]] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _request_for(cfg: BenchConfig, write: bool, key: str, value: bytes) -> tuple[str, str, bytes]:
    if cfg.target == "etcd":
        k = base64.b64encode(key.encode()).decode()
        if write:
            return (
                "POST",
                "/v3/kv/put",
                json.dumps({"key": k, "value": base64.b64encode(value).decode()}).encode(),
            )
        return "POST", "/v3/kv/range", json.dumps({"key": k}).encode()
    return ("PUT" if write else "GET"), kv_path(key, cfg.consistency), (value if write else b"")


def _ok(cfg: BenchConfig, status: int) -> bool:
    return status < 300 or (status == 404 and cfg.target == "kvtrace")


async def _preload(cfg: BenchConfig, value: bytes) -> None:
    counter = itertools.count()

    async def worker(endpoint: str) -> None:
        conn = Connection(endpoint, cfg.timeout, cfg.security)
        try:
            while (i := next(counter)) < cfg.keys:
                await conn.request(*_request_for(cfg, True, f"{cfg.key_prefix}{i}", value))
        finally:
            conn.close()

    await asyncio.gather(
        *(worker(cfg.endpoints[i % len(cfg.endpoints)]) for i in range(min(cfg.clients, 64)))
    )


# progress(elapsed seconds, duration, operations so far, errors so far), about once a second.
Progress = Callable[[float, float, int, int], None]
PROGRESS_INTERVAL = 1.0


async def run(cfg: BenchConfig, progress: Progress | None = None) -> Result:
    cfg.validate()
    rng = random.Random(cfg.seed)
    value = bytes(rng.getrandbits(8) for _ in range(cfg.value_size))
    if cfg.preload:
        await _preload(cfg, value)
    sample = key_sampler(cfg, rng)
    latencies: dict[str, list[float]] = {"write": [], "read": []}
    errors: list[str] = []
    budget = itertools.count() if not cfg.ops else iter(range(cfg.ops))
    deadline = time.perf_counter() + min(cfg.duration, MAX_DURATION)
    clock = time.perf_counter

    async def worker(n: int) -> None:
        conn = Connection(cfg.endpoints[n % len(cfg.endpoints)], cfg.timeout, cfg.security)
        wrng = random.Random(cfg.seed * 1000 + n)
        try:
            for _ in budget:
                if clock() >= deadline:
                    return
                write = wrng.random() < cfg.write_ratio
                method, path, body = _request_for(cfg, write, f"{cfg.key_prefix}{sample()}", value)
                t0 = clock()
                try:
                    resp = await conn.request(method, path, body)
                    ok = _ok(cfg, resp.status)
                    if not ok and len(errors) < 1000:
                        errors.append(f"{resp.status} {resp.body[:120]!r}")
                except ClientError as exc:
                    ok = False
                    if len(errors) < 1000:
                        errors.append(str(exc))
                if ok:
                    latencies["write" if write else "read"].append(clock() - t0)
        finally:
            conn.close()

    async def report(started: float) -> None:
        duration = min(cfg.duration, MAX_DURATION)
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            if progress is not None:
                progress(
                    clock() - started,
                    duration,
                    len(latencies["write"]) + len(latencies["read"]),
                    len(errors),
                )

    started = clock()
    reporter = asyncio.create_task(report(started)) if progress is not None else None
    try:
        await asyncio.gather(*(worker(n) for n in range(cfg.clients)))
    finally:
        if reporter is not None:
            reporter.cancel()
    elapsed = clock() - started
    every = sorted(latencies["write"] + latencies["read"])
    by_op = {}
    for op, values in latencies.items():
        if values:
            values.sort()
            by_op[op] = {
                "ops": len(values),
                "ops_per_s": round(len(values) / elapsed, 1),
                "p50_ms": round(percentile(values, 0.5) * 1000, 3),
                "p99_ms": round(percentile(values, 0.99) * 1000, 3),
            }
    return Result(
        target=cfg.target,
        clients=cfg.clients,
        seconds=round(elapsed, 3),
        ops=len(every),
        errors=len(errors),
        ops_per_s=round(len(every) / elapsed, 1) if elapsed else 0.0,
        p50_ms=round(percentile(every, 0.5) * 1000, 3),
        p95_ms=round(percentile(every, 0.95) * 1000, 3),
        p99_ms=round(percentile(every, 0.99) * 1000, 3),
        by_operation=by_op,
        error_samples=errors[:5],
    )


def table(rows: list[tuple[str, Result]]) -> str:
    width = max([28, *(len(name) for name, _ in rows)])  # the run column fits the longest name
    head = f"{'run':<{width}} {'ops/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}"
    lines = [head, "-" * len(head)]
    for name, r in rows:
        lines.append(
            f"{name:<{width}} {r.ops_per_s:>10.1f} {r.p50_ms:>8.3f} {r.p95_ms:>8.3f} {r.p99_ms:>8.3f} {r.errors:>7}"
        )
    return "\n".join(lines)


def run_sync(cfg: BenchConfig, progress: Progress | None = None) -> Result:
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run(cfg, progress))
