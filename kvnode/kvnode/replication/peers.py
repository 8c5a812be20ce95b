"""What replication needs from the peer transport (implemented by kvnode.transport)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from kvnode.replication.ring import Member
from kvnode.storage import Record

# Operation codes carried in PUT messages so the replica's span names what it applies.
OPERATIONS = ("replicate", "hinted_handoff", "read_repair", "anti_entropy", "rebalance")


class PeerError(Exception):
    """A replica call failed: `reason` is short and safe to show to clients."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


Trace = tuple[str, str]  # (traceparent, tracestate); ("", "") when not traced
NO_TRACE: Trace = ("", "")


class PeerAPI(Protocol):
    def put(self, member: Member, records: Sequence[Record], operation: str, trace: Trace = NO_TRACE) -> asyncio.Future[int]: ...

    def get(self, member: Member, key: bytes, trace: Trace = NO_TRACE) -> asyncio.Future[Record | None]: ...

    def merkle(self, member: Member, requester: str, trace: Trace = NO_TRACE) -> asyncio.Future[list[bytes]]: ...

    def fetch(self, member: Member, requester: str, leaves: Sequence[int], trace: Trace = NO_TRACE) -> asyncio.Future[list[Record]]: ...
