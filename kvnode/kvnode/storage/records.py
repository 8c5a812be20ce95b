"""The stored unit and the last-write-wins order (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Record(NamedTuple):
    """One versioned value; a tombstone is a delete (its value is empty)."""

    key: bytes
    value: bytes
    version: int  # hybrid-logical-clock timestamp, see kvnode.replication.hlc
    tombstone: bool = False


def order(record: Record) -> tuple[int, bool, bytes]:
    """Last-write-wins order: newer version wins; exact ties break deterministically
    (tombstone first, then value bytes) so every replica converges on the same record."""
    return (record.version, record.tombstone, record.value)


def supersedes(candidate: Record, current: Record | None) -> bool:
    return current is None or order(candidate) > order(current)


def newest(records: Iterable[Record | None]) -> Record | None:
    best: Record | None = None
    for record in records:
        if record is not None and supersedes(record, best):
            best = record
    return best
