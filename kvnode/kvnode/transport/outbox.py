"""Coalesce the frames written during one event-loop iteration into a single write.

Under load many requests (or replies) for the same peer are produced in one iteration;
joining them saves a send() system call each, the largest cost of the peer path.
"""

from __future__ import annotations

import asyncio


class Outbox:
    __slots__ = ("transport", "loop", "frames")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.transport = transport
        self.loop = loop
        self.frames: list[bytes] = []

    def write(self, frame: bytes) -> None:
        if not self.frames:
            self.loop.call_soon(self.flush)
        self.frames.append(frame)

    def flush(self) -> None:
        frames, self.frames = self.frames, []
        if frames and not self.transport.is_closing():
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
