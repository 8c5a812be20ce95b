"""Hybrid logical clock (pure state transitions plus a small stateful wrapper).

A version is one 64-bit integer: wall milliseconds in the high bits, a 16-bit logical
counter in the low bits. Versions therefore sort like time, stay close to wall time, and
remain monotonic across nodes that exchange them (each node observes the versions it
receives).
"""

from __future__ import annotations

import time
from collections.abc import Callable

LOGICAL_BITS = 16
_LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def pack(wall_ms: int, logical: int) -> int:
    return (wall_ms << LOGICAL_BITS) | logical


def unpack(version: int) -> tuple[int, int]:
    return version >> LOGICAL_BITS, version & _LOGICAL_MASK


def tick(last: int, wall_ms: int) -> int:
    """The next local version after `last` at wall time `wall_ms`."""
    last_ms, logical = unpack(last)
    if wall_ms > last_ms:
        return pack(wall_ms, 0)
    if logical < _LOGICAL_MASK:
        return pack(last_ms, logical + 1)
    return pack(last_ms + 1, 0)


def observe(last: int, remote: int, wall_ms: int) -> int:
    """The clock after receiving `remote`: never behind it, never behind itself."""
    return tick(max(last, remote), wall_ms)


def wall_ms_of(version: int) -> int:
    return version >> LOGICAL_BITS


class Clock:
    def __init__(self, wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000):
        self._wall_ms = wall_ms
        self.last = 0

    def now(self) -> int:
        self.last = tick(self.last, self._wall_ms())
        return self.last

    def observe(self, remote: int) -> None:
        if remote > self.last:
            self.last = observe(self.last, remote, self._wall_ms())
