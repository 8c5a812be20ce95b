"""Merging the records held ahead of the index into what the index answers (pure).

Between two checkpoints the newest copy of a recently written key is durable in the commit log
and held in memory, not yet in the SQLite index (`kvnode.storage.engine`). A read that goes to
the index therefore merges a snapshot of the held records, taken *before* it queries the index:
a record checkpointed meanwhile is then in both, and the newer copy wins, so nothing durable
before the read started is missed. Imports only `kvnode.keys` and `kvnode.storage.records`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from kvnode.keys import key_hash
from kvnode.storage.records import Record, supersedes

Digest = tuple[bytes, int, int, bool]  # key, key hash, version, tombstone


def in_ranges(khash: int, ranges: Sequence[tuple[int, int]] | None) -> bool:
    return ranges is None or any(lo <= khash < hi for lo, hi in ranges)


def merge_digests(
    rows: Sequence[tuple[Any, ...]],
    held: Mapping[bytes, Record],
    ranges: Sequence[tuple[int, int]] | None,
) -> list[Digest]:
    """Index digest rows (key, khash, version, tombstone) with the held records in `ranges`;
    per key the newer (version, tombstone) wins (digests carry no value)."""
    extra: dict[bytes, Digest] = {}
    for key, r in held.items():
        khash = key_hash(key)
        if in_ranges(khash, ranges):
            extra[key] = (key, khash, r.version, r.tombstone)
    out: list[Digest] = []
    for k, h, v, t in rows:
        mine = extra.get(k)
        if mine is not None:
            if (mine[2], mine[3]) >= (v, bool(t)):
                continue
            del extra[k]
        out.append((k, h, v, bool(t)))
    out.extend(extra.values())
    return out


def merge_pages(
    pages: Iterator[list[Record]], held: Mapping[bytes, Record], page: int
) -> Iterator[list[Record]]:
    """Pages of index records in key order, merged with the held records (newest per key),
    still in key order and at most `page` records each."""
    pending = sorted(held.items())
    at = 0
    out: list[Record] = []
    for rows in pages:
        for r in rows:
            while at < len(pending) and pending[at][0] < r.key:
                out.append(pending[at][1])
                at += 1
            if at < len(pending) and pending[at][0] == r.key:
                mine = pending[at][1]
                at += 1
                out.append(mine if supersedes(mine, r) else r)
            else:
                out.append(r)
        while len(out) >= page:
            yield out[:page]
            out = out[page:]
    out.extend(r for _k, r in pending[at:])
    while out:
        yield out[:page]
        out = out[page:]
