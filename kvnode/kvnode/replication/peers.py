"""What replication needs from the peer transport (implemented by kvnode.transport)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Protocol

from kvnode.replication.ring import Member
from kvnode.storage import Record

# Operation codes carried in PUT messages so the replica's span names what it applies.
OPERATIONS = ("replicate", "hinted_handoff", "read_repair", "anti_entropy", "rebalance")


MAX_BATCH_BYTES = 4 << 20  # well under the peer frame limit, whatever the value size limit


def batches(records: Sequence[Record], max_bytes: int = MAX_BATCH_BYTES) -> Iterator[list[Record]]:
    """Split records into consecutive batches of at most `max_bytes` (at least one record each)."""
    batch: list[Record] = []
    size = 0
    for r in records:
        n = len(r.key) + len(r.value) + 16
        if batch and size + n > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(r)
        size += n
    if batch:
        yield batch


class PeerError(Exception):
    """A replica call failed: `reason` is short and safe to show to clients."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


Trace = tuple[str, str]  # (traceparent, tracestate); ("", "") when not traced
NO_TRACE: Trace = ("", "")


class PeerAPI(Protocol):
    def put(
        self, member: Member, records: Sequence[Record], operation: str, trace: Trace = NO_TRACE
    ) -> asyncio.Future[int]: ...

    def get(
        self, member: Member, key: bytes, trace: Trace = NO_TRACE
    ) -> asyncio.Future[Record | None]: ...

    def merkle(
        self, member: Member, requester: str, trace: Trace = NO_TRACE
    ) -> asyncio.Future[list[bytes]]: ...

    def fetch(
        self, member: Member, requester: str, leaves: Sequence[int], trace: Trace = NO_TRACE
    ) -> asyncio.Future[list[Record]]: ...

    def hints_held(self, member: Member, requester: str) -> asyncio.Future[int]:
        """How many hints `member` holds for `requester` (0 from a build that does not say)."""
        ...

    def keep(self, member: Member, trace_id: int) -> bool:
        """Tell `member` to export its spans of `trace_id` (retroactive sampling; one-way)."""
        ...

    def status(self, member: Member, body: bytes) -> asyncio.Future[bytes]:
        """Exchange membership-change status (replication/membership.py encodes the bodies)."""
        ...
