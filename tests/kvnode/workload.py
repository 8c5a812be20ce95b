"""A checked QUORUM workload over a fixed key set, for tests that change a cluster under load.

Every key is written first, so a QUORUM read of it must never answer 404; each read also
remembers the newest version acknowledged before it started and must return that version or
a later one. Writes store unique values; the acknowledged version of each write is kept so
that a final sweep can check every acknowledged write is readable (its value or a later one).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kvnode.client import ClientError, KVClient


@dataclass
class Counts:
    reads: int = 0
    writes: int = 0
    acked: int = 0
    unavailable: int = 0  # 503s and connection errors: allowed, not violations
    missing: list[str] = field(
        default_factory=list
    )  # QUORUM reads of acknowledged keys that gave 404
    stale: list[str] = field(
        default_factory=list
    )  # reads older than a write acknowledged before them

    def summary(self) -> str:
        return (
            f"reads={self.reads} writes={self.writes} acked={self.acked} unavailable={self.unavailable} "
            f"missing(404)={len(self.missing)} stale={len(self.stale)}"
        )


class Workload:
    """Run `clients` concurrent clients against `endpoints()` (re-read per request) in a
    background thread until `stop()`; bounded by `max_seconds` whatever happens."""

    def __init__(
        self,
        endpoints: Callable[[], list[str]],
        keys: int = 200,
        clients: int = 8,
        write_ratio: float = 0.3,
        seed: int = 0,
        max_seconds: float = 120,
    ):
        self.endpoints = endpoints
        self.keys = [f"wl/{i}" for i in range(keys)]
        self.clients = clients
        self.write_ratio = write_ratio
        self.rng = random.Random(seed)
        self.max_seconds = max_seconds
        self.acked: dict[str, tuple[int, bytes]] = {}  # key -> newest acknowledged (version, value)
        self.counts = Counts()
        self.ties: list[str] = []  # keys whose acknowledged version a concurrent write shares
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0

    def preload(self, endpoint: str) -> None:
        async def main() -> None:
            client = KVClient(endpoint, timeout=10)
            try:
                for key in self.keys:
                    await self._write(client, key, require=True)
            finally:
                client.close()

        asyncio.run(main())

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> Counts:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            assert not self._thread.is_alive(), "the workload did not stop"
        return self.counts

    async def _write(self, client: KVClient, key: str, require: bool = False) -> None:
        self._seq += 1
        value = f"{key}#{self._seq}".encode()
        self.counts.writes += 1
        resp = await client.put(key, value, "quorum")
        if resp.status == 204:
            version = int(resp.version or 0)
            self.counts.acked += 1
            if version > self.acked.get(key, (0, b""))[0]:
                self.acked[key] = (version, value)
        elif require:
            raise AssertionError(f"preload of {key} failed: {resp.status} {resp.body[:200]!r}")
        else:
            self.counts.unavailable += 1

    async def _read(self, client: KVClient, key: str, endpoint: str) -> None:
        floor = self.acked[key][0]
        self.counts.reads += 1
        resp = await client.get(key, "quorum")
        if resp.status == 404:
            self.counts.missing.append(f"GET {key} via {endpoint} -> 404")
        elif resp.status == 200:
            if int(resp.version or 0) < floor:
                self.counts.stale.append(
                    f"GET {key} via {endpoint}: version {resp.version} < acknowledged {floor}"
                )
        else:
            self.counts.unavailable += 1

    async def _client(self, n: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        rng = random.Random(self.rng.random())
        clients: dict[str, KVClient] = {}
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                endpoint = rng.choice(self.endpoints())
                client = clients.get(endpoint)
                if client is None:
                    client = clients[endpoint] = KVClient(endpoint, timeout=5)
                key = rng.choice(self.keys)
                try:
                    if rng.random() < self.write_ratio:
                        await self._write(client, key)
                    else:
                        await self._read(client, key, endpoint)
                except (TimeoutError, ClientError, OSError):
                    self.counts.unavailable += 1
                    clients.pop(endpoint).close()
                    await asyncio.sleep(0.05)  # a node that is down: do not spin
        finally:
            for client in clients.values():
                client.close()

    async def _run(self) -> None:
        await asyncio.gather(*(self._client(n) for n in range(self.clients)))

    def lost(self, read: Callable[[str], tuple[int, dict[str, str], bytes]]) -> list[str]:
        """Acknowledged writes not readable at QUORUM with their version or a later one (a
        concurrent write with the very same HLC version may win the tie-break: `ties`)."""
        out = []
        for key, (version, value) in sorted(self.acked.items()):
            status, headers, body = read(key)
            got = int(headers.get("X-KV-Version") or headers.get("x-kv-version") or 0)
            tie = got == version and body != value and body.startswith(f"{key}#".encode())
            if tie:  # a concurrent write got the same HLC version and won the tie-break
                self.ties.append(key)
            elif status != 200 or got < version or (got == version and body != value):
                out.append(f"{key}: acknowledged v{version}, read {status} v{got}")
        return out
