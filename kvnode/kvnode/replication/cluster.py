"""One node's view of the cluster: who it is, the members, the ring, its store and peers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kvnode.metrics import Metrics
from kvnode.replication.hlc import Clock
from kvnode.replication.peers import PeerAPI
from kvnode.replication.ring import Member, Ring
from kvnode.storage import Record
from kvnode.storage.engine import Store

log = logging.getLogger("kvnode")


@dataclass(frozen=True)
class Settings:
    node_id: str
    replication_factor: int = 3
    vnodes: int = 64
    hinted_handoff: bool = True
    hint_interval: float = 1.0
    anti_entropy_interval: float = 30.0
    tombstone_grace: float = 86400.0


class Cluster:
    def __init__(self, settings: Settings, members: tuple[Member, ...], store: Store, peers: PeerAPI, metrics: Metrics):
        self.settings = settings
        self.id = settings.node_id
        self.rf = settings.replication_factor
        self.store = store
        self.peers = peers
        self.metrics = metrics
        self.clock = Clock()
        self.ring = Ring(members, settings.vnodes)
        self.epoch = 1
        self.rebalancing = False
        self.rebalanced_epoch = 1
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- membership -----------------------------------------------------------------
    def owners(self, khash: int) -> tuple[str, ...]:
        return self.ring.preference(khash, self.rf)

    def member(self, member_id: str) -> Member | None:
        return self.ring.member(member_id)

    @property
    def is_member(self) -> bool:
        return self.id in self.ring.ids

    def add_hints(self, owner: str, records: list[Record]) -> None:
        """Persist hints for `owner` in the background (callers do not wait for them)."""
        self.metrics.hints_stored.inc(amount=len(records))
        self.store.add_hints(owner, records).add_done_callback(_retrieve)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run background work, keep a reference, log its failure."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def every(self, interval: Callable[[], float], job: Callable[[], Coroutine[Any, Any, Any]], first: float | None = None) -> None:
        async def loop() -> None:
            await asyncio.sleep(interval() if first is None else first)
            while True:
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a failed round must not stop the loop
                    log.exception("periodic job %s failed", getattr(job, "__name__", job))
                await asyncio.sleep(interval())

        self.spawn(loop())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("could not store hints", exc_info=fut.exception())
