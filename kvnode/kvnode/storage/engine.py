"""Storage engine: a commit log for durability, SQLite (WAL) as its checkpointed index.

Every mutation goes through the writer thread. It takes whatever is queued (optionally waiting
a small window for more): record writes are decided last-write-wins against the newest copy
(the records not yet checkpointed, held in memory, else the index), the winners are appended to
the commit log as one frame and fdatasynced (`kvnode.storage.commitlog`), and only then do the
callers' futures resolve. So an acknowledged write is durable, concurrent writes share one
append and one fdatasync (group commit), and a crash keeps whole frames or nothing.

A checkpoint writes the records held in memory into the SQLite table in one transaction that
also records the log generation it covers, commits it with ``synchronous=FULL`` (an fsync), and
starts the log's next generation from the beginning of the file. It runs when the log or the
held records grow past a bound, after a second without writes, before any other job (hints,
tombstone purges: they run in the checkpoint's transaction) and at close. On open, the frames of
the generation after the index's are replayed into the index (recovery). Reads use their own
connection on the event loop thread and the held records, and see only durable data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kvnode.keys import key_hash
from kvnode.running import running_loop
from kvnode.storage.commitlog import HEADER, CommitLog, Replay, decode_frames, encode_records
from kvnode.storage.held import merge_digests, merge_pages
from kvnode.storage.policy import FSYNC_POLICIES
from kvnode.storage.records import Record, newest

log = logging.getLogger(__name__)

MAX_BATCH = 1024
LOG_FILE = "kv.log"
CHECKPOINT_BYTES = 8 << 20  # log bytes since the last checkpoint (also what is preallocated)
CHECKPOINT_KEYS = 16384  # distinct keys held in memory since the last checkpoint
CHECKPOINT_IDLE = 1.0  # seconds without writes, with records held, before a checkpoint

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
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_SELECT = "SELECT value, version, tombstone FROM kv WHERE key = ?"
_GENERATION = "SELECT value FROM meta WHERE name = 'log_generation'"
_SET_GENERATION = "INSERT OR REPLACE INTO meta(name, value) VALUES ('log_generation', ?)"

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


def _upsert_rows(records: Iterable[Record]) -> Iterator[tuple[Any, ...]]:
    for r in records:
        yield (r.key, key_hash(r.key), r.version, r.tombstone, r.value)


def _newer(a: Record, b: Record) -> bool:
    """Whether `a` wins last-write-wins over `b` (`kvnode.storage.records.order`, inlined)."""
    return (a.version, a.tombstone, a.value) > (b.version, b.tombstone, b.value)


def _row_record(key: bytes, row: tuple[Any, ...] | None) -> Record | None:
    return None if row is None else Record(key, row[0], row[1], bool(row[2]))


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
        self._log = CommitLog(os.path.join(data_dir, LOG_FILE), CHECKPOINT_BYTES)
        # Records durable in the log but not yet in the index, newest per key (written by the
        # writer thread only; a checkpoint replaces the dict, so a reader's reference stays a
        # consistent snapshot), and which of their keys the index does not hold at all.
        self._held: dict[bytes, Record] = {}
        self._held_new: set[bytes] = set()
        self._checkpoint_lock = threading.Lock()  # count() reads index and held keys together
        self.recovered = self._recover(writer)
        self._reader = _connect(self.path)
        # Heavy scans (Merkle digests for anti-entropy) run on their own thread and connection,
        # so that a node holding many keys does not stall the event loop while it compares.
        self._scanner = ThreadPoolExecutor(1, thread_name_prefix="kvnode-scan")
        self._scan_local = threading.local()
        self._loop_thread = threading.get_ident()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outgoing: list[tuple[Any, ...]] = []  # queued in this loop iteration (_hand_over)
        self._writer_thread = threading.Thread(
            target=self._run, args=(writer,), name="kvnode-writer", daemon=True
        )
        self._writer_thread.start()
        self.closed = False
        # Read cache (event loop thread only): key -> committed record, or None for "absent".
        # Updated by done callbacks of committed writes, which run before anyone is told the
        # write succeeded; bounded by value bytes, evicted oldest-first.
        self._cache: dict[bytes, Record | None] = {}
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self._on_commit = on_commit  # seconds of each durable commit (its fdatasync or fsync)

    def _recover(self, conn: sqlite3.Connection) -> Replay:
        """Replay the log's frames of the generation after the index's into the index."""
        row = conn.execute(_GENERATION).fetchone()
        generation = 0 if row is None else int(row[0])
        replay = decode_frames(self._log.read(), HEADER.size, generation + 1)
        self._log.reset(generation + 1)
        if replay.records:
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            _apply(cur, replay.records)
            cur.execute(_SET_GENERATION, (generation + 1,))
            cur.execute("COMMIT")
            cur.close()
            self._log.reset(generation + 2)
        log.info(
            "commit log %s: replayed %d records of %d frames (generation %d), stopped at "
            "offset %d (%s)",
            self._log.path,
            len(replay.records),
            replay.frames,
            generation + 1,
            replay.end,
            replay.stop,
        )
        return replay

    # -- writer thread --------------------------------------------------------------
    # A queue item is a list of entries (job, records, future, loop): `records` are written
    # through the log (the hot path: no closure per write), else `job(conn)` runs in a
    # checkpoint's transaction.
    def _run(self, conn: sqlite3.Connection) -> None:
        cur = conn.cursor()
        backlog: list[tuple[Any, ...]] = []
        stop = False
        while backlog or not stop:
            if not backlog:
                try:
                    item = self._queue.get(timeout=CHECKPOINT_IDLE if self._held else None)
                except queue.Empty:
                    self._checkpoint_or_log(conn, cur)
                    continue
                if item is _STOP:
                    break
                backlog.extend(item)
                if self.group_window:
                    time.sleep(self.group_window)
            while not stop and len(backlog) < self.batch_limit:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                else:
                    backlog.extend(nxt)
            batch, backlog = backlog[: self.batch_limit], backlog[self.batch_limit :]
            if all(job is None for job, _records, _fut, _loop in batch):
                self._hand_back(self._log_commit(cur, batch))
                if self._log.pos >= CHECKPOINT_BYTES or len(self._held) >= CHECKPOINT_KEYS:
                    self._checkpoint_or_log(conn, cur)
            else:
                self._hand_back(self._commit(conn, cur, batch))
        self._checkpoint_or_log(conn, cur)  # a clean stop leaves the log with nothing to replay
        cur.close()
        conn.close()
        self._log.close()

    def _log_commit(self, cur: sqlite3.Cursor, batch: list[tuple[Any, ...]]) -> list[Any]:
        """Decide each record against the newest copy, append the winners as one frame and
        fdatasync it; then they are held (visible to reads) until the next checkpoint."""
        held = self._held
        won: dict[bytes, Record] = {}
        new: list[bytes] = []
        results: list[tuple[Any, ...]] = []
        for _job, records, fut, loop in batch:
            applied = []
            for r in records:
                current = won.get(r.key) or held.get(r.key)
                if current is None:
                    current = _row_record(r.key, cur.execute(_SELECT, (r.key,)).fetchone())
                    if current is None and r.key not in won:
                        new.append(r.key)
                if current is None or _newer(r, current):
                    won[r.key] = r
                    applied.append(True)
                else:
                    applied.append(False)
            results.append((fut, loop, records, applied, None))
        if won:
            try:
                started = time.perf_counter()
                self._log.append(encode_records(list(won.values())))
                if self._on_commit is not None:
                    self._on_commit(time.perf_counter() - started)
            except OSError as exc:  # nothing was acknowledged: the next frame overwrites it
                log.error("commit log append failed: %s", exc)
                return [(fut, loop, records, None, exc) for fut, loop, records, _a, _e in results]
            held.update(won)
            self._held_new.update(new)
        return results

    def _flush_held(self, cur: sqlite3.Cursor) -> None:
        """In a transaction: the held records into the index, and the generation it covers."""
        if self._held:
            cur.executemany(_UPSERT, _upsert_rows(self._held.values()))
        cur.execute(_SET_GENERATION, (self._log.generation,))

    def _checkpointed(self) -> None:
        """Right after the checkpoint's commit, under the checkpoint lock: nothing is held, the
        log starts its next generation."""
        self._held = {}
        self._held_new = set()
        self._log.reset(self._log.generation + 1)

    def _checkpoint_or_log(self, conn: sqlite3.Connection, cur: sqlite3.Cursor) -> bool:
        """A checkpoint on its own; a failure is logged (the records stay held and logged)."""
        try:
            with self._checkpoint_lock:
                cur.execute("BEGIN IMMEDIATE")
                self._flush_held(cur)
                cur.execute("COMMIT")
                self._checkpointed()
        except sqlite3.Error as exc:
            log.error("checkpoint of the commit log failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return False
        return True

    def _commit(
        self, conn: sqlite3.Connection, cur: sqlite3.Cursor, batch: list[tuple[Any, ...]]
    ) -> list[Any]:
        """A batch with jobs: a checkpoint that applies the batch in its own transaction."""
        try:
            with self._checkpoint_lock:
                cur.execute("BEGIN IMMEDIATE")
                self._flush_held(cur)
                results: list[tuple[Any, ...]] = [
                    (fut, loop, records, _apply(cur, records) if job is None else job(conn), None)
                    for job, records, fut, loop in batch
                ]
                started = time.perf_counter()
                cur.execute("COMMIT")
                self._checkpointed()
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - started)
            return results
        except Exception:  # noqa: BLE001 - each job again on its own: the failing one reports
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        if not self._checkpoint_or_log(conn, cur):
            error = RuntimeError("the store could not checkpoint its commit log (see the log)")
            return [(fut, loop, records, None, error) for _job, records, fut, loop in batch]
        return [
            (fut, loop, records, *self._commit_one(conn, cur, job, records))
            for job, records, fut, loop in batch
        ]

    def _hand_back(self, results: list[tuple[Any, ...]]) -> None:
        """Resolve a batch's futures on their loops (one call per loop)."""
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
        loop = running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self._outgoing:
            loop.call_soon(self._hand_over)
        self._outgoing.append((job, records, fut, loop))
        return fut

    def _hand_over(self) -> None:
        """Once per loop iteration: everything queued in it goes to the writer in one item, so
        a burst of writes wakes the writer once and reaches it as one batch."""
        items, self._outgoing = self._outgoing, []
        if items:
            self._queue.put(items)

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
        record = self._held.get(key)
        if record is None:
            record = _row_record(key, self._reader.execute(_SELECT, (key,)).fetchone())
        if self._cache_limit:
            self._cache_put(key, record)
        return record

    def checkpoint(self) -> asyncio.Future[None]:
        """Resolves once everything queued before is in the index (and the log is empty)."""
        return self.submit(lambda conn: None)

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
        held = self._held.copy()  # before the index query: see kvnode.storage.held
        return merge_digests(self._conn().execute(sql, params).fetchall(), held, khash_ranges)

    def get_many(self, keys: Sequence[bytes]) -> list[Record]:
        """Durable records of these keys (the held ones and the index, not the loop's cache)."""
        held = self._held.copy()
        conn = self._conn()
        out = []
        for key in keys:
            record = newest(
                [held.get(key), _row_record(key, conn.execute(_SELECT, (key,)).fetchone())]
            )
            if record is not None:
                out.append(record)
        return out

    def scan(self, page: int = 512) -> Iterator[list[Record]]:
        """Every record, in pages in key order (for rebalancing)."""
        return merge_pages(self._index_pages(page), self._held.copy(), page)

    def _index_pages(self, page: int) -> Iterator[list[Record]]:
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
        """Stored keys (tombstones included)."""
        with self._checkpoint_lock:
            held_new = len(self._held_new)
            return held_new + int(self._reader.execute("SELECT count(*) FROM kv").fetchone()[0])

    def hint_counts(self) -> dict[str, int]:
        rows = self._reader.execute("SELECT target, count(*) FROM hints GROUP BY target").fetchall()
        return dict(rows)

    def has_hints(self, targets: Sequence[str]) -> bool:
        """Whether a hint waits for any of ``targets``: one probe of the (target, id) index,
        where :meth:`hint_counts` counts every pending hint."""
        if not targets:
            return False
        marks = ",".join("?" * len(targets))
        query = f"SELECT 1 FROM hints WHERE target IN ({marks}) LIMIT 1"
        return self._reader.execute(query, tuple(targets)).fetchone() is not None

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
        self._hand_over()
        self._queue.put(_STOP)
        self._writer_thread.join(timeout=10)
        self._scanner.submit(self._close_scan_conn)
        self._scanner.shutdown(wait=True)
        self._reader.close()

    def _close_scan_conn(self) -> None:
        conn = getattr(self._scan_local, "conn", None)
        if conn is not None:
            conn.close()
