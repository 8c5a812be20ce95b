"""SQLite (WAL) storage engine with a single writer thread and group commit.

Every mutation goes through the writer thread: it takes whatever is queued (optionally
waiting a small window for more), applies it in one transaction, commits with
``synchronous=FULL`` (the commit fsyncs the WAL) and only then resolves the callers'
futures. So an acknowledged write is durable, many concurrent writes share one fsync, and a
crash leaves either the whole transaction or none of it. Reads use their own connection on
the event loop thread and see only committed data.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kvnode.keys import key_hash
from kvnode.storage.policy import FSYNC_POLICIES
from kvnode.storage.records import Record

MAX_BATCH = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    khash INTEGER NOT NULL,
    version INTEGER NOT NULL,
    tombstone INTEGER NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    tombstone INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hints_target ON hints(target, id);
"""

_UPSERT = """
INSERT INTO kv(key, khash, version, tombstone, value) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET
    version = excluded.version, tombstone = excluded.tombstone, value = excluded.value
WHERE (excluded.version, excluded.tombstone, excluded.value) > (kv.version, kv.tombstone, kv.value)
"""

Job = Callable[[sqlite3.Connection], Any]
_STOP = object()


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA temp_store=MEMORY")  # nothing outside the data dir (read-only root)
    return conn


def _apply(cur: sqlite3.Cursor, records: Sequence[Record]) -> list[bool]:
    """Upsert records last-write-wins (writer thread, inside its transaction); which changed."""
    applied = []
    for r in records:
        cur.execute(_UPSERT, (r.key, key_hash(r.key), r.version, r.tombstone, r.value))
        applied.append(cur.rowcount > 0)
    return applied


class Store:
    """Durable records and hints. Mutations are coroutines (resolved after fsync)."""

    def __init__(
        self,
        data_dir: str,
        fsync_policy: str = "group",
        group_window: float = 0.0,
        cache_bytes: int = 64 << 20,
        on_commit: Callable[[float], None] | None = None,
    ):
        if fsync_policy not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}, not {fsync_policy!r}")
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, "kv.sqlite3")
        self.batch_limit = 1 if fsync_policy == "always" else MAX_BATCH
        self.group_window = group_window if fsync_policy == "group" else 0.0
        writer = _connect(self.path)
        writer.executescript(_SCHEMA)
        self._reader = _connect(self.path)
        # Heavy scans (Merkle digests for anti-entropy) run on their own thread and connection,
        # so that a node holding many keys does not stall the event loop while it compares.
        self._scanner = ThreadPoolExecutor(1, thread_name_prefix="kvnode-scan")
        self._scan_local = threading.local()
        self._loop_thread = threading.get_ident()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, args=(writer,), name="kvnode-writer", daemon=True
        )
        self._thread.start()
        self.closed = False
        # Read cache (event loop thread only): key -> committed record, or None for "absent".
        # Updated by done callbacks of committed writes, which run before anyone is told the
        # write succeeded; bounded by value bytes, evicted oldest-first.
        self._cache: dict[bytes, Record | None] = {}
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self._on_commit = (
            on_commit  # seconds of each durable commit (the WAL fsync), on the writer thread
        )

    # -- writer thread --------------------------------------------------------------
    # A queue item is (job, records, future, loop): `records` are applied by the writer's own
    # upsert (the hot path: no closure per write, one reused cursor), else `job(conn)` runs.
    def _run(self, conn: sqlite3.Connection) -> None:
        cur = conn.cursor()
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            if self.group_window:
                time.sleep(self.group_window)
            stop = False
            while len(batch) < self.batch_limit:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(conn, cur, batch)
            if stop:
                break
        cur.close()
        conn.close()

    def _commit(
        self, conn: sqlite3.Connection, cur: sqlite3.Cursor, batch: list[tuple[Any, ...]]
    ) -> None:
        try:
            cur.execute("BEGIN IMMEDIATE")
            results: list[tuple[Any, ...]] = [
                (fut, loop, records, _apply(cur, records) if job is None else job(conn), None)
                for job, records, fut, loop in batch
            ]
            started = time.perf_counter()
            cur.execute("COMMIT")
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - each job again on its own: the failing one reports
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [
                (fut, loop, records, *self._commit_one(conn, cur, job, records))
                for job, records, fut, loop in batch
            ]
        first_loop = results[0][1]
        if all(r[1] is first_loop for r in results):
            by_loop = {first_loop: results}
        else:
            by_loop = {}
            for r in results:
                by_loop.setdefault(r[1], []).append(r)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._resolve, items)
            except RuntimeError:
                pass  # the loop is gone (shutdown)

    @staticmethod
    def _commit_one(
        conn: sqlite3.Connection,
        cur: sqlite3.Cursor,
        job: Job | None,
        records: Sequence[Record] | None,
    ) -> tuple[Any, BaseException | None]:
        try:
            cur.execute("BEGIN IMMEDIATE")
            result = _apply(cur, records) if job is None else job(conn)  # type: ignore[arg-type]
            cur.execute("COMMIT")
            return result, None
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return None, exc

    def _resolve(self, items: list[tuple[Any, ...]]) -> None:
        """On the loop thread, once a batch is committed: the read cache learns the applied
        records first (before anyone is told), then the futures resolve."""
        for fut, _loop, records, result, error in items:
            if records is not None and error is None and self._cache_limit:
                for record, applied in zip(records, result):
                    if applied:
                        self._cache_put(record.key, record)
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

    def _enqueue(self, job: Job | None, records: Sequence[Record] | None) -> asyncio.Future[Any]:
        if self.closed:
            raise RuntimeError("store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((job, records, fut, loop))
        return fut

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue a write job; the future resolves once it is committed and fsynced."""
        return self._enqueue(job, None)

    # -- mutations ------------------------------------------------------------------
    def apply(self, records: Sequence[Record]) -> asyncio.Future[list[bool]]:
        """Apply records last-write-wins; resolves to which of them changed the store."""
        return self._enqueue(None, records)

    def _cache_put(self, key: bytes, record: Record | None) -> None:
        cache = self._cache
        if key in cache:
            old = cache.pop(key)
            self._cache_bytes -= len(key) + (len(old.value) if old is not None else 0)
        size = len(key) + (len(record.value) if record is not None else 0)
        if size > self._cache_limit // 16:
            return
        while cache and self._cache_bytes + size > self._cache_limit:
            evicted_key = next(iter(cache))
            evicted = cache.pop(evicted_key)
            self._cache_bytes -= len(evicted_key) + (
                len(evicted.value) if evicted is not None else 0
            )
        cache[key] = record
        self._cache_bytes += size

    def add_hints(self, target: str, records: Sequence[Record]) -> asyncio.Future[None]:
        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO hints(target, key, value, version, tombstone) VALUES (?, ?, ?, ?, ?)",
                [(target, r.key, r.value, r.version, int(r.tombstone)) for r in records],
            )

        return self.submit(job)

    def delete_hints(self, ids: Sequence[int]) -> asyncio.Future[None]:
        def job(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM hints WHERE id = ?", [(i,) for i in ids])

        return self.submit(job)

    def purge_tombstones(self, older_than_version: int) -> asyncio.Future[int]:
        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM kv WHERE tombstone = 1 AND version < ?", (older_than_version,)
            )
            return int(cur.rowcount)

        fut = self.submit(job)
        fut.add_done_callback(lambda f: self._cache_clear())
        return fut

    def _cache_clear(self) -> None:
        self._cache.clear()
        self._cache_bytes = 0

    # -- reads (event loop thread) --------------------------------------------------
    def get(self, key: bytes) -> Record | None:
        try:
            return self._cache[key]
        except KeyError:
            pass
        row = self._reader.execute(
            "SELECT value, version, tombstone FROM kv WHERE key = ?", (key,)
        ).fetchone()
        record = None if row is None else Record(key, row[0], row[1], bool(row[2]))
        if self._cache_limit:
            self._cache_put(key, record)
        return record

    def in_scan_thread(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run `fn(*args)` on the scan thread: the reads it makes there (`digests`,
        `get_many`) use that thread's own connection, and the event loop keeps serving."""
        return asyncio.get_running_loop().run_in_executor(self._scanner, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        """The reader of the calling thread: the event loop's, or the scan thread's own."""
        if threading.get_ident() == self._loop_thread:
            return self._reader
        conn: sqlite3.Connection | None = getattr(self._scan_local, "conn", None)
        if conn is None:
            conn = self._scan_local.conn = _connect(self.path)
        return conn

    def digests(
        self, khash_ranges: Sequence[tuple[int, int]] | None = None
    ) -> list[tuple[bytes, int, int, bool]]:
        """(key, khash, version, tombstone) of every record, or of those whose key hash lies in
        one of the half-open ranges (filtered by SQLite): the input of Merkle trees."""
        sql = "SELECT key, khash, version, tombstone FROM kv"
        params: list[int] = []
        if khash_ranges is not None:
            if not khash_ranges:
                return []
            # BETWEEN lo AND hi - 1: the top range ends at 2**63, one past SQLite's largest integer
            sql += " WHERE " + " OR ".join("khash BETWEEN ? AND ?" for _ in khash_ranges)
            params = [bound for lo, hi in khash_ranges for bound in (lo, hi - 1)]
        rows = self._conn().execute(sql, params).fetchall()
        return [(k, h, v, bool(t)) for k, h, v, t in rows]

    def get_many(self, keys: Sequence[bytes]) -> list[Record]:
        """Committed records of these keys (straight from SQLite, not the loop's cache)."""
        conn = self._conn()
        out = []
        for key in keys:
            row = conn.execute(
                "SELECT value, version, tombstone FROM kv WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                out.append(Record(key, row[0], row[1], bool(row[2])))
        return out

    def scan(self, page: int = 512) -> Iterator[list[Record]]:
        """Every record, in pages (for rebalancing)."""
        last = b""
        first = True
        while True:
            rows = self._reader.execute(
                "SELECT key, value, version, tombstone FROM kv WHERE key > ? OR ? ORDER BY key LIMIT ?",
                (last, first, page),
            ).fetchall()
            if not rows:
                return
            first = False
            last = rows[-1][0]
            yield [Record(k, v, ver, bool(t)) for k, v, ver, t in rows]

    def count(self) -> int:
        return int(self._reader.execute("SELECT count(*) FROM kv").fetchone()[0])

    def hint_counts(self) -> dict[str, int]:
        rows = self._reader.execute("SELECT target, count(*) FROM hints GROUP BY target").fetchall()
        return dict(rows)

    def hints_for(self, target: str, limit: int = 256) -> list[tuple[int, Record]]:
        rows = self._reader.execute(
            "SELECT id, key, value, version, tombstone FROM hints WHERE target = ? ORDER BY id LIMIT ?",
            (target, limit),
        ).fetchall()
        return [(i, Record(k, v, ver, bool(t))) for i, k, v, ver, t in rows]

    def integrity_ok(self) -> bool:
        return bool(self._reader.execute("PRAGMA quick_check").fetchone()[0] == "ok")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        self._scanner.submit(self._close_scan_conn)
        self._scanner.shutdown(wait=True)
        self._reader.close()

    def _close_scan_conn(self) -> None:
        conn = getattr(self._scan_local, "conn", None)
        if conn is not None:
            conn.close()
