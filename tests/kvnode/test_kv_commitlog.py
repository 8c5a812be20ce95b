"""The store's commit log on real files and processes: held records, checkpoints, recovery
after SIGKILL with a torn or damaged tail, hints and tombstones across checkpoints."""

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

from kvnode.storage import Record
from kvnode.storage.commitlog import FRAME, HEADER, decode_frames
from kvnode.storage.engine import LOG_FILE, Store

pytestmark = pytest.mark.unit

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from kvnode.storage import Record
    from kvnode.storage.engine import Store

    async def main():
        store = Store(sys.argv[1])
        await store.apply([Record(b"gone", b"v1", 1)])
        await store.apply([Record(b"gone", b"", 2, True)])
        await store.checkpoint()
        await store.purge_tombstones(3)  # the tombstone is purged: "gone" must stay absent
        for i in range(int(sys.argv[2])):  # one frame each, held in the log, not checkpointed
            await store.apply([Record(b"k%d" % i, b"v" * 50, 10 + i)])
        print("ready", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


def killed_writer(data: Path, frames: int) -> None:
    """Run SCRIPT until it acknowledged `frames` single-record frames, then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(data), str(frames)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    line = ""
    while time.monotonic() < deadline and not line:
        line = proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert line.strip() == "ready", "the writer did not get ready"


def frame_offsets(data: Path) -> list[int]:
    """Where each frame of the log's current generation starts (and where the last ends)."""
    buf = (data / LOG_FILE).read_bytes()
    offsets = [HEADER.size]
    while True:
        (length,) = FRAME.unpack_from(buf, offsets[-1])[:1]
        if length == 0:
            return offsets
        offsets.append(offsets[-1] + FRAME.size + length)


def test_sigkill_replays_the_log_and_keeps_purged_keys_purged(tmp_path: Path) -> None:
    killed_writer(tmp_path, 5)
    store = Store(str(tmp_path))
    try:
        assert store.recovered.frames == 5 and store.recovered.stop in ("end", "crc")
        assert [store.get(b"k%d" % i) for i in range(5)] == [
            Record(b"k%d" % i, b"v" * 50, 10 + i) for i in range(5)
        ]
        assert store.get(b"gone") is None, "a frame of an older generation was replayed"
        assert store.integrity_ok()
    finally:
        store.close()


def test_torn_tail_is_discarded_on_recovery(tmp_path: Path) -> None:
    killed_writer(tmp_path, 4)
    offsets = frame_offsets(tmp_path)
    with open(tmp_path / LOG_FILE, "r+b") as f:  # the last frame was only partly written
        f.truncate(offsets[4] - 7)
    store = Store(str(tmp_path))
    try:
        assert (store.recovered.frames, store.recovered.stop) == (3, "short")
        assert store.recovered.end == offsets[3]
        assert [store.get(b"k%d" % i) is not None for i in range(4)] == [True] * 3 + [False]
        assert store.count() == 3
    finally:
        store.close()


def test_damaged_frame_is_detected_and_the_rest_discarded(tmp_path: Path) -> None:
    killed_writer(tmp_path, 4)
    offsets = frame_offsets(tmp_path)
    with open(tmp_path / LOG_FILE, "r+b") as f:
        f.seek(offsets[2] + FRAME.size + 3)
        byte = f.read(1)
        f.seek(offsets[2] + FRAME.size + 3)
        f.write(bytes([byte[0] ^ 0x40]))
    store = Store(str(tmp_path))
    try:
        assert (store.recovered.frames, store.recovered.stop) == (2, "crc")
        assert [store.get(b"k%d" % i) is not None for i in range(4)] == [True, True, False, False]
    finally:
        store.close()
    # recovery checkpointed what it replayed and moved on: the damaged bytes are never read again
    store = Store(str(tmp_path))
    try:
        assert store.recovered.frames == 0
        assert store.count() == 2
    finally:
        store.close()


async def test_held_records_are_read_like_indexed_ones(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    try:
        await store.apply([Record(b"i", b"indexed", 1), Record(b"t", b"", 1, True)])
        await store.checkpoint()
        assert decode_frames((tmp_path / LOG_FILE).read_bytes(), HEADER.size, 2).frames == 0
        assert await store.apply([Record(b"h", b"held", 2), Record(b"i", b"newer", 3)]) == [
            True,
            True,
        ]
        assert await store.apply([Record(b"i", b"older", 2)]) == [False]  # against the held copy
        assert await store.apply([Record(b"t", b"older", 0)]) == [False]  # against the index
        store._cache_clear()
        assert store.get(b"h") == Record(b"h", b"held", 2)
        assert store.get(b"i") == Record(b"i", b"newer", 3)
        assert store.count() == 3
        assert sorted((k, v) for k, _h, v, _t in store.digests()) == [
            (b"h", 2),
            (b"i", 3),
            (b"t", 1),
        ]
        assert await store.in_scan_thread(store.get_many, [b"i", b"h", b"x"]) == [
            Record(b"i", b"newer", 3),
            Record(b"h", b"held", 2),
        ]
        assert [r.key for page in store.scan(page=2) for r in page] == [b"h", b"i", b"t"]
        await store.checkpoint()  # the same answers from the index alone
        assert store.count() == 3 and store.get(b"i") == Record(b"i", b"newer", 3)
    finally:
        store.close()


async def test_hints_and_purges_run_in_a_checkpoint(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    try:
        await store.apply([Record(b"d", b"", 5, True)])  # held in the log
        await store.add_hints("n2", [Record(b"a", b"1", 1)])
        assert store.hint_counts() == {"n2": 1}
        assert await store.purge_tombstones(6) == 1  # it saw the held tombstone
        assert store.get(b"d") is None and store.count() == 0
    finally:
        store.close()


async def test_idle_store_checkpoints_by_itself(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    try:
        await store.apply([Record(b"k", b"v", 1)])
        assert store._held
        deadline = time.monotonic() + 10
        while store._held and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not store._held, "no checkpoint after the store went idle"
        row = store._reader.execute("SELECT value FROM kv WHERE key = ?", (b"k",)).fetchone()
        assert row == (b"v",)
    finally:
        store.close()


async def test_close_leaves_nothing_to_replay(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    await store.apply([Record(f"k{i}".encode(), b"v", 1) for i in range(20)])
    store.close()
    size = os.path.getsize(tmp_path / LOG_FILE)
    store = Store(str(tmp_path))
    try:
        assert store.recovered.frames == 0 and store.count() == 20
        assert os.path.getsize(tmp_path / LOG_FILE) == size  # rewritten in place, not grown
    finally:
        store.close()


async def test_a_failed_append_acknowledges_nothing_and_the_next_one_works(
    tmp_path: Path,
) -> None:
    """A write error (EIO, ENOSPC) fails the batch's callers; nothing of it becomes visible,
    and the next frame overwrites whatever part of it reached the file."""
    store = Store(str(tmp_path))
    real_fd = store._log.fd
    os.pwrite(real_fd, b"\xff" * 40, store._log.pos)  # a partial frame reached the file
    # The log's next write goes to /dev/full (ENOSPC). The log's descriptor is swapped rather
    # than its method: the storage modules run compiled (mypyc), whose methods are fixed.
    full = os.open("/dev/full", os.O_WRONLY | os.O_CLOEXEC)
    store._log.fd = full
    try:
        with pytest.raises(OSError, match="No space left"):
            await store.apply([Record(b"lost", b"v", 1)])
        store._log.fd = real_fd
        assert store.get(b"lost") is None and store.count() == 0
        assert await store.apply([Record(b"kept", b"v", 2)]) == [True]
        replay = decode_frames(
            (tmp_path / LOG_FILE).read_bytes(), HEADER.size, store._log.generation
        )
        assert replay.records == [Record(b"kept", b"v", 2)]  # what a restart would replay
    finally:
        store._log.fd = real_fd
        os.close(full)
        store.close()
