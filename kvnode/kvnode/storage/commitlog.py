"""The durable commit log: framed record batches, one append and one fdatasync per group commit.

The log makes a write durable; the SQLite table behind it is a checkpointed index (see
`kvnode.storage.engine`). The framing and decoding functions are pure; `CommitLog` holds the
file. This module imports only the standard library and `kvnode.storage.records`.

File layout (little endian)::

    file    := header frame*            header := b"KVLOG\\0" u16 format, 8 bytes reserved
    frame   := u32 payload_len, u32 crc, payload
    crc     := crc32(payload, crc32(u64 generation, u32 payload_len))
    payload := record+                  (one group commit)
    record  := u8 flags (bit 0: tombstone), u64 version, u32 key_len, u32 value_len, key, value

Each checkpoint moves the log to the next *generation* and rewrites it from the start, in place
(overwriting is cheaper to fdatasync than growing a file: no size change to journal). Frames of
an older generation, a torn (partly written) frame and a frame whose bytes changed all fail the
CRC, which is seeded with the generation, so decoding stops at the first frame that is not a
whole, intact frame of the current generation: everything after it was never acknowledged
(appends are sequential and each is acknowledged only after its fdatasync).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from kvnode.storage.records import Record

MAGIC = b"KVLOG\x00"
FORMAT = 1
HEADER = struct.Struct("<6sH8x")
FRAME = struct.Struct("<II")
SEED = struct.Struct("<QI")
RECORD = struct.Struct("<BQII")
TOMBSTONE = 1
MAX_PAYLOAD = 1 << 30  # a frame claiming more is garbage (values are at most a few MiB)


class LogError(Exception):
    """The file is not a commit log of a format this code reads."""


class Replay(NamedTuple):
    """What decoding a log found: the intact records in order, and where and why it stopped."""

    records: list[Record]
    frames: int
    end: int  # offset just past the last intact frame
    stop: str  # "end" (end of file or an unwritten area), "short" (torn: the frame runs past
    # the end of the file) or "crc" (torn, changed, or a frame of an older generation)


def _crc(generation: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(SEED.pack(generation, len(payload))))


def encode_records(records: Sequence[Record]) -> bytes:
    """A frame's payload: the records of one group commit."""
    pack = RECORD.pack
    parts: list[bytes] = []
    for r in records:
        parts.append(pack(TOMBSTONE if r.tombstone else 0, r.version, len(r.key), len(r.value)))
        parts.append(r.key)
        parts.append(r.value)
    return b"".join(parts)


def encode_frame(generation: int, payload: bytes) -> bytes:
    return FRAME.pack(len(payload), _crc(generation, payload)) + payload


def decode_records(payload: bytes | memoryview) -> list[Record]:
    """The records of an intact payload (raises ValueError if its structure is wrong)."""
    out = []
    at, end, size = 0, len(payload), RECORD.size
    unpack = RECORD.unpack_from
    while at < end:
        if end - at < size:
            raise ValueError(f"record header cut at offset {at}")
        flags, version, klen, vlen = unpack(payload, at)
        at += size
        if flags & ~TOMBSTONE or at + klen + vlen > end:
            raise ValueError(f"malformed record at offset {at - size}")
        key = bytes(payload[at : at + klen])
        value = bytes(payload[at + klen : at + klen + vlen])
        at += klen + vlen
        out.append(Record(key, value, version, bool(flags)))
    return out


def decode_frames(buf: bytes, start: int, generation: int) -> Replay:
    """Every intact frame of `generation` from `start` on, stopping at the first that is not."""
    view = memoryview(buf)
    records: list[Record] = []
    at, frames, stop = start, 0, "end"
    while True:
        if len(buf) - at < FRAME.size:
            break
        length, crc = FRAME.unpack_from(buf, at)
        if length == 0:
            break  # never written (preallocated zeros)
        body = at + FRAME.size
        if length > MAX_PAYLOAD or body + length > len(buf):
            stop = "short"
            break
        payload = view[body : body + length]
        if _crc(generation, payload) != crc:
            stop = "crc"
            break
        try:
            records.extend(decode_records(payload))
        except ValueError:
            stop = "crc"  # cannot happen unless CRC32 collided: treated as a damaged frame
            break
        at, frames = body + length, frames + 1
    return Replay(records, frames, at, stop)


def header() -> bytes:
    return HEADER.pack(MAGIC, FORMAT)


def check_header(buf: bytes, path: str) -> None:
    if len(buf) < HEADER.size:
        raise LogError(f"{path}: shorter than a commit log header ({len(buf)} bytes)")
    magic, fmt = HEADER.unpack_from(buf)
    if magic != MAGIC or fmt != FORMAT:
        raise LogError(f"{path}: not a kvnode commit log of format {FORMAT} (magic {magic!r})")


class CommitLog:
    """The log file: appends at `pos`, fdatasync, and a reset to the next generation.

    Used by one thread at a time (the store's writer after the store opened)."""

    def __init__(self, path: str, preallocate: int):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if os.fstat(self.fd).st_size < HEADER.size:  # new (or its creation never completed)
            # Zeros written once: later generations overwrite them in place (no size change
            # to journal on each fdatasync), and a zero length marks the unwritten area.
            os.pwrite(self.fd, header() + bytes(preallocate), 0)
            os.fsync(self.fd)
            dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the new file's directory entry is durable too
            finally:
                os.close(dir_fd)
        self.pos = HEADER.size
        self.generation = 0

    def read(self) -> bytes:
        size = os.fstat(self.fd).st_size
        buf = os.pread(self.fd, size, 0)
        check_header(buf, self.path)
        return buf

    def append(self, payload: bytes) -> None:
        """Write one frame at the end of the current generation and fdatasync it."""
        frame = encode_frame(self.generation, payload)
        os.pwrite(self.fd, frame, self.pos)
        os.fdatasync(self.fd)
        self.pos += len(frame)

    def reset(self, generation: int) -> None:
        """Start `generation` at the beginning (its index checkpoint covers everything before)."""
        self.generation = generation
        self.pos = HEADER.size

    def close(self) -> None:
        os.close(self.fd)
