"""kvnode.running.running_loop: the running loop, as asyncio.get_running_loop() answers, cached."""

from __future__ import annotations

import asyncio
import threading
from unittest import mock

import pytest

from kvnode.running import running_loop

pytestmark = pytest.mark.unit


async def _twice() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop, int]:
    first = running_loop()
    with mock.patch.object(asyncio, "get_running_loop", side_effect=AssertionError("asked")):
        second = running_loop()  # cached: asyncio (and its getpid) is not asked again
    return first, second, id(asyncio.get_running_loop())


def test_it_is_the_running_loop_asked_once_per_loop_and_thread() -> None:
    first, second, running = asyncio.run(_twice())
    assert first is second and id(first) == running
    again, _, running_again = asyncio.run(_twice())  # a new loop: asked again, not the old one
    assert again is not first and id(again) == running_again
    in_thread: list[tuple[object, object, int]] = []
    thread = threading.Thread(target=lambda: in_thread.append(asyncio.run(_twice())))
    thread.start()
    thread.join(10)
    assert in_thread and in_thread[0][0] is not again and id(in_thread[0][0]) == in_thread[0][2]


def test_outside_a_loop_it_raises_as_asyncio_does() -> None:
    asyncio.run(_twice())  # the cached loop is closed now
    with pytest.raises(RuntimeError, match="no running event loop"):
        running_loop()
