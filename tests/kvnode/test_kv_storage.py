"""Storage engine: last-write-wins, hints, tombstones, and recovery after an unclean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kvnode.storage import Record, newest, supersedes
from kvnode.storage.engine import Store

pytestmark = pytest.mark.unit


async def test_last_write_wins_and_reads_see_committed_records(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "group")
    try:
        assert await store.apply([Record(b"k", b"v2", 20)]) == [True]
        assert await store.apply([Record(b"k", b"v1", 10)]) == [False]  # older: ignored
        assert store.get(b"k") == Record(b"k", b"v2", 20)
        assert await store.apply([Record(b"k", b"", 30, True)]) == [True]
        assert store.get(b"k") == Record(b"k", b"", 30, True)
        # concurrent writes share commits and all resolve
        results = await asyncio.gather(
            *(store.apply([Record(f"c{i}".encode(), b"x", i + 1)]) for i in range(200))
        )
        assert all(r == [True] for r in results)
        assert store.count() == 201
        assert len(store.digests()) == 201
        assert sum(len(p) for p in store.scan(page=50)) == 201
        assert await store.purge_tombstones(31) == 1
        assert store.get(b"k") is None
    finally:
        store.close()


async def test_equal_versions_converge_deterministically(tmp_path: Path) -> None:
    a, b = Record(b"k", b"aaa", 5), Record(b"k", b"bbb", 5)
    assert supersedes(b, a) and not supersedes(a, b)
    assert newest([a, None, b]) == newest([b, a]) == b
    store = Store(str(tmp_path), "always")
    try:
        await store.apply([b])
        await store.apply([a])
        assert store.get(b"k") == b
    finally:
        store.close()


async def test_hints_persist_until_deleted(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    await store.add_hints("n2", [Record(b"a", b"1", 1), Record(b"b", b"2", 2)])
    store.close()
    store = Store(str(tmp_path))
    try:
        assert store.hint_counts() == {"n2": 2}
        assert store.has_hints(("n1", "n2")) and not store.has_hints(("n1", "n3"))
        assert not store.has_hints(())
        batch = store.hints_for("n2")
        assert [r.key for _, r in batch] == [b"a", b"b"]
        await store.delete_hints([i for i, _ in batch])
        assert store.hint_counts() == {} and not store.has_hints(("n2",))
    finally:
        store.close()


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from kvnode.storage import Record
    from kvnode.storage.engine import Store

    async def main():
        store = Store(sys.argv[1], sys.argv[2])
        i = 0
        while True:
            batch = [store.apply([Record(f"k{i + j}".encode(), b"v" * 200, i + j + 1)]) for j in range(16)]
            await asyncio.gather(*batch)
            i += 16
            print(i, flush=True)  # everything below i is acknowledged

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("policy", ["group", "always"])
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, policy: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), policy],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    acked = 0
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    while acked < 200 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert acked >= 200, "the writer made too little progress"
    store = Store(str(tmp_path))
    try:
        assert store.integrity_ok()
        for i in range(acked):
            record = store.get(f"k{i}".encode())
            assert record is not None and record.version == i + 1, f"acknowledged write k{i} lost"
    finally:
        store.close()


async def test_read_cache_follows_commits_and_stays_bounded(tmp_path: Path) -> None:
    store = Store(str(tmp_path), cache_bytes=16 * 1024)
    try:
        assert store.get(b"k") is None  # cached as absent
        await store.apply([Record(b"k", b"v1", 1)])
        assert store.get(b"k") == Record(b"k", b"v1", 1)
        await store.apply([Record(b"k", b"old", 0)])  # loses LWW: cache unchanged
        assert store.get(b"k") == Record(b"k", b"v1", 1)
        await store.apply([Record(b"k", b"", 2, True)])
        assert store.get(b"k") == Record(b"k", b"", 2, True)
        await store.purge_tombstones(3)
        assert store.get(b"k") is None
        await store.apply([Record(f"big{i}".encode(), b"x" * 500, 5) for i in range(100)])
        assert all(
            store.get(f"big{i}".encode()) == Record(f"big{i}".encode(), b"x" * 500, 5)
            for i in range(100)
        )
        assert store._cache_bytes <= 16 * 1024
        assert store._cache_bytes == sum(
            len(k) + (len(r.value) if r else 0) for k, r in store._cache.items()
        )
    finally:
        store.close()


async def test_read_cache_learns_a_commit_whose_caller_gave_up(tmp_path: Path) -> None:
    """The cache is updated when the batch commits, before and regardless of the callers'
    futures: a cancelled caller (a client that went away) must not leave a stale entry."""
    store = Store(str(tmp_path))
    try:
        assert store.get(b"c") is None  # cached as absent
        gone = store.apply([Record(b"c", b"v", 1)])
        gone.cancel()
        assert await store.apply([Record(b"d", b"w", 1)]) == [
            True
        ]  # queued after it: committed after it
        assert store.get(b"c") == Record(b"c", b"v", 1)
        assert (
            await store.submit(lambda conn: conn.execute("SELECT count(*) FROM kv").fetchone()[0])
            == 2
        )
    finally:
        store.close()


async def test_digests_filtered_by_key_hash_ranges(tmp_path: Path) -> None:
    from kvnode.keys import key_hash

    store = Store(str(tmp_path))
    try:
        await store.apply([Record(f"k{i}".encode(), b"v", 1) for i in range(300)])
        lo, hi = 0, 1 << 61
        inside = {k for k, h, _, _ in store.digests([(lo, hi)])}
        assert inside == {
            f"k{i}".encode() for i in range(300) if lo <= key_hash(f"k{i}".encode()) < hi
        }
        assert 0 < len(inside) < 300
        assert store.digests([]) == [] and len(store.digests()) == 300
        assert (
            len(store.digests([(0, 1 << 62), (1 << 62, 1 << 63)])) == 300
        )  # the top of the hash space
    finally:
        store.close()


async def test_scans_run_on_their_own_thread_and_connection(tmp_path: Path) -> None:
    import threading

    store = Store(str(tmp_path))
    try:
        await store.apply([Record(f"s{i}".encode(), b"v", i + 1) for i in range(50)])

        def scan() -> tuple[int, list[tuple[bytes, int, int, bool]], list[Record]]:
            return (
                threading.get_ident(),
                store.digests(),
                store.get_many([b"s3", b"missing", b"s7"]),
            )

        thread, digests, records = await store.in_scan_thread(scan)
        assert thread != threading.get_ident(), "the event loop's thread is not the one scanning"
        assert sorted(digests) == sorted(store.digests())
        assert records == [Record(b"s3", b"v", 4), Record(b"s7", b"v", 8)]
        await store.apply([Record(b"s3", b"newer", 100)])  # the scan connection sees later commits
        assert (await store.in_scan_thread(store.get_many, [b"s3"])) == [
            Record(b"s3", b"newer", 100)
        ]
    finally:
        store.close()
