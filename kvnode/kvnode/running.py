"""The running event loop, without a system call per request.

`asyncio.get_running_loop()` checks the process id on every call (CPython 3.11: a `getpid()`
system call, ~1.1 µs on the 2-core test machine; a QUORUM write asked for the loop about seven
times across the cluster). `running_loop()` asks once per thread and keeps the answer while that
loop runs: the same loop `get_running_loop()` would return (a thread runs one loop at a time),
and the same RuntimeError when no loop runs. Stdlib only; imports no other kvnode module.
"""

from __future__ import annotations

import asyncio
import threading


class _Cache(threading.local):
    loop: asyncio.AbstractEventLoop | None = None


_cache = _Cache()


def running_loop() -> asyncio.AbstractEventLoop:
    loop = _cache.loop
    if loop is None or not loop.is_running():
        loop = _cache.loop = asyncio.get_running_loop()
    return loop
