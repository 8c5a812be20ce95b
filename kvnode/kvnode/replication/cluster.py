"""One node's view of the cluster: who it is, the members, the ring, its store and peers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kvnode.metrics import Metrics
from kvnode.replication import membership
from kvnode.replication.hlc import Clock
from kvnode.replication.membership import Status, View
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
    def __init__(
        self,
        settings: Settings,
        members: tuple[Member, ...],
        store: Store,
        peers: PeerAPI,
        metrics: Metrics,
    ):
        self.settings = settings
        self.id = settings.node_id
        self.rf = settings.replication_factor
        self.store = store
        self.peers = peers
        self.metrics = metrics
        self.clock = Clock()
        self.view = View(Ring(members, settings.vnodes))
        self.epoch = 1
        self.rebalancing = False
        self.rebalanced_epoch = 1
        # membership changes (replication/membership.py): what the peers said, whether this
        # node streamed its records for the current target ring, whether it still has to
        # learn from its peers that a change is going on (it just started)
        self.peer_status: dict[str, Status] = {}
        self.streamed_fp = ""
        self.fresh = True
        self.heard: set[str] = set()
        self.status_changed = asyncio.Event()
        self.driver: asyncio.Task[Any] | None = None  # drives the change in progress
        self._tasks: set[asyncio.Task[Any]] = set()
        # After a start: not ready until no peer holds hints for this node (catchup.py).
        self.caught_up = False
        self.catching_up: dict[str, int] = {}

    # -- membership -----------------------------------------------------------------
    @property
    def ring(self) -> Ring:
        """The target ring: the members of the peers file."""
        return self.view.target

    def owners(self, khash: int) -> tuple[str, ...]:
        return self.view.target.preference(khash, self.rf)

    def write_sets(self, khash: int) -> tuple[tuple[str, ...], ...]:
        """Replica sets whose quorum an operation needs (one set unless ranges move)."""
        if not self.view.previous:
            return (self.view.target.preference(khash, self.rf),)
        return self.view.write_sets(khash, self.rf)

    def copy_to(self, khash: int) -> tuple[str, ...]:
        """Every replica a write goes to (old and new owners while ranges move)."""
        if not self.view.previous:
            return self.view.target.preference(khash, self.rf)
        return self.view.copy_to(khash, self.rf)

    def member(self, member_id: str) -> Member | None:
        found = self.view.target.member(member_id)
        if found is None:
            for ring in self.view.previous:
                found = ring.member(member_id)
                if found is not None:
                    break
        return found

    def status(self) -> Status:
        view = self.view
        previous = tuple(r.members for r in view.previous)
        return Status(self.id, view.target.members, previous, view.phase, self.drained())

    def drained(self) -> bool:
        """Streamed for the current target ring, and no hints waiting for one of its members."""
        if self.streamed_fp != membership.fingerprint(self.view.target.members):
            return False
        return not self.store.has_hints(self.view.target.ids)

    def learn(self, status: Status) -> None:
        """Record a peer's status; a node that just started takes a change in progress from it."""
        if status.node == self.id:
            return
        self.peer_status[status.node] = status
        if self.fresh:
            adopted = membership.adopt(self.view, status)
            if adopted is not None and not self.view.previous:
                log.info(
                    "joining the membership change in progress (phase %s, from %s)",
                    adopted.phase,
                    status.node,
                )
                self.view = adopted
                self.rebalancing = True
            self.heard.add(status.node)
            if self.heard >= set(self.view.target.ids) - {self.id}:
                self.fresh = False
        self.status_changed.set()

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

    def every(
        self,
        interval: Callable[[], float],
        job: Callable[[], Coroutine[Any, Any, Any]],
        first: float | None = None,
    ) -> None:
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
