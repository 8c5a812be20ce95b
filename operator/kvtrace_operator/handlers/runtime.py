"""The operator's state for one run, kept on kopf's ``memo`` (``memo.runtime``), never in
module globals: the options, the API client, one lock per object being reconciled, what the
API server accepted per owner and what the last apply left of each child, the canary's outcomes, kopf's live indices, and the queue of
reconcile requests (coalesced: many requests for one object while it waits or runs -> one
more reconcile, reading the object afresh).

Per-object entries are dropped when the object is deleted (``forget``) or, for locks and
requests, as soon as nobody uses them: the state does not grow with create/delete cycles.
Imports no other handler module (they all import this one)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ctypes
import ctypes.util
import dataclasses
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from lightkube import AsyncClient

from kvtrace.shared.api import KVCLUSTER, PIPELINE
from kvtrace_operator.k8s import (
    PRUNABLE_KINDS,
    Applied,
    ChildKey,
    KVCluster,
    Permissions,
    SecretData,
    Seen,
    TracingPipeline,
    get_object,
    refresh_pool,
)
from kvtrace_operator.render.images import DEFAULT_IMAGES, Images
from kvtrace_operator.render.secret_refs import Found

log = logging.getLogger("kvtrace_operator")

ObjectKey = tuple[str, str, str]  # (kind, namespace, name)
# A runner reconciles one object known by namespace and name; ``apply=False`` only observes.
Runner = Callable[["Runtime", str, str, bool], Awaitable[None]]
# The canary's outcome per pipeline: (condition status/reason/message, status.traceDelivery).
Delivery = tuple[tuple[str, str, str], dict[str, Any]]
# kopf's index of every Secret of the watched namespaces: (namespace, name) -> Found (no data).
SECRETS_INDEX = "secret_versions"
# kopf's indices of our children by owner UID, one per kind (handlers/children.py keeps them).
CHILDREN_INDICES = tuple(f"children_{kind.lower()}" for _, kind in PRUNABLE_KINDS)
# kopf's indices of our custom resources: (namespace, name) -> the object as the watch saw it
# last, without managedFields (handlers/common.py register_objects_index keeps them).
OBJECTS_INDICES = {KVCLUSTER: "kvclusters_by_name", PIPELINE: "pipelines_by_name"}
RESOURCES = {KVCLUSTER: KVCluster, PIPELINE: TracingPipeline}
# How long after a deletion a reconcile that was under way may still write the object's entries.
LATE_WRITES_S = 60.0
# Deletions quiet for this long: the memory the deleted objects used goes back (release_memory).
RELEASE_AFTER_S = 10.0


def release_memory() -> None:
    """Collect garbage, then hand the C heap's free pages back to the system (glibc's
    malloc_trim): after many objects went, the process's resident memory returns near its
    baseline instead of staying at its peak. Nothing where the C library has no malloc_trim."""
    gc.collect()
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


@dataclasses.dataclass(frozen=True)
class Options:
    """Operator behaviour that handlers are registered with (from `kvtrace operator run`)."""

    resync_interval: float = 60.0  # the drift-repair timer
    retry_backoff: float = 5.0  # delay before a failed reconcile is retried
    drain_timeout: float = 300.0  # how long leaving members may take to hand their data over
    canary_interval: float = 60.0  # TraceDelivery canary of each pipeline; 0 disables it
    canary_timeout: float = 20.0  # Jaeger lookup bound on top of the tail-sampling decision wait
    images: Images = DEFAULT_IMAGES  # the default images of resources that name none
    request_delay: float = 0.5  # requests for one object within this window make one reconcile
    # status refreshes only (a child's status changed: members becoming ready, a rollout)
    # within this window make one; a request to apply cuts it to ``request_delay``
    status_delay: float = 2.0
    # a new cluster whose pipeline does not exist (yet) waits this long before its members
    # start untraced: a pipeline applied with it would otherwise roll them a moment later
    pipeline_grace: float = 20.0
    request_concurrency: int = 8  # queued reconciles running at once (kopf's own run besides)
    # reconciles of one kind doing their work at once, whatever started them: 200 resources
    # created at once queue for the API server anyway (k8s.client.IN_FLIGHT requests at a
    # time), so more would only hold their renders and bodies in memory meanwhile
    reconcile_concurrency: int = 32
    webhook: bool = False  # the injection webhook is served (handlers/webhook.py)


class ObjectLocks:
    """One reconcile at a time per object, whichever handler (or request) triggers it. An
    entry lives only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._entries: dict[ObjectKey, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def hold(self, key: ObjectKey) -> AsyncIterator[None]:
        lock, users = self._entries.get(key, (asyncio.Lock(), 0))
        self._entries[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._entries[key]
            if users <= 1:
                del self._entries[key]
            else:
                self._entries[key] = (lock, users - 1)


@dataclasses.dataclass
class _Request:
    apply: bool
    dirty: bool = True


class Requests:
    """Reconcile requests, coalesced per object: a request waits ``request_delay`` seconds
    (``status_delay`` while only status refreshes were asked for: a StatefulSet's members
    becoming ready one after the other make one status write, not one each) so the burst it
    belongs to gathers, then the object's runner runs; requests arriving meanwhile make one
    more run after it, gathered the same way. At most ``request_concurrency`` runs of one
    kind at once. The caller never waits: a handler asking for another object's reconcile is
    not blocked by it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.runners: dict[str, Runner] = {}
        self._pending: dict[ObjectKey, _Request] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # per kind: a pipeline's reconcile never queues behind hundreds of KVClusters' refreshes
        self._slots: dict[str, asyncio.Semaphore] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def request(self, kind: str, namespace: str, name: str, *, apply: bool = True) -> None:
        key = (kind, namespace, name)
        pending = self._pending.get(key)
        if pending is not None:
            pending.dirty, pending.apply = True, pending.apply or apply
            return
        if kind not in self.runners:
            raise KeyError(f"no runner for {kind} (registered: {', '.join(sorted(self.runners))})")
        self._pending[key] = _Request(apply)
        task = asyncio.get_running_loop().create_task(self._run(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: ObjectKey) -> None:
        kind, namespace, name = key
        options = self.runtime.options
        slots = self._slots.setdefault(kind, asyncio.Semaphore(max(1, options.request_concurrency)))
        try:
            pending = self._pending[key]
            while pending.dirty:
                await self._gather(pending)
                apply, pending.dirty, pending.apply = pending.apply, False, False
                async with slots:
                    try:
                        await self.runners[kind](self.runtime, namespace, name, apply)
                    except Exception as exc:  # noqa: BLE001 - logged; the resync timer repairs
                        log.warning(
                            "queued reconcile of %s %s/%s failed: %s", kind, namespace, name, exc
                        )
        finally:
            self._pending.pop(key, None)

    async def _gather(self, pending: _Request) -> None:
        """Wait while the burst gathers: ``request_delay``, ``status_delay`` as long as only
        status refreshes are pending (looked at every ``request_delay`` at most)."""
        options, loop = self.runtime.options, asyncio.get_running_loop()
        start, step = loop.time(), max(0.01, min(options.request_delay, options.status_delay))
        while True:
            window = options.request_delay if pending.apply else options.status_delay
            left = start + window - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, step))

    async def close(self) -> None:
        """Cancel what is still queued (the operator is stopping)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pending.clear()  # a task cancelled before it started never ran its cleanup


@dataclasses.dataclass
class Runtime:
    """Everything the handlers of one operator run share (``memo.runtime``)."""

    client: AsyncClient
    options: Options = Options()
    indices: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # kopf's live indices
    locks: ObjectLocks = dataclasses.field(default_factory=ObjectLocks)
    # owner uid -> checksum of each child's render the API server accepted (no dry run again)
    validated: dict[str, dict[ChildKey, str]] = dataclasses.field(default_factory=dict)
    # owner uid -> the cert-manager Certificates rendered when its others were last pruned
    certificates_kept: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    # owner uid -> what the last apply left of each child (the next applies only what drifted)
    applied: dict[str, dict[ChildKey, Applied]] = dataclasses.field(default_factory=dict)
    deliveries: dict[tuple[str, str], Delivery] = dataclasses.field(default_factory=dict)
    rechecks: dict[tuple[str, str], asyncio.Task[None]] = dataclasses.field(default_factory=dict)
    # (workload uid, message) -> when its last InjectionFailed event was posted (bounded)
    injection_events: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    requests: Requests = dataclasses.field(init=False)
    # the data of the Secrets the operator reads, while the Secret watch sees them unchanged
    secret_data: SecretData = dataclasses.field(init=False)
    # the operator's own permissions per namespace (a render is checked before it is written)
    permissions: Permissions = dataclasses.field(init=False)
    _release: asyncio.TimerHandle | None = dataclasses.field(default=None, init=False)
    _places: dict[str, asyncio.Semaphore] = dataclasses.field(default_factory=dict, init=False)
    _releasing: asyncio.Task[None] | None = dataclasses.field(default=None, init=False)

    def __post_init__(self) -> None:
        self.requests = Requests(self)
        self.secret_data = SecretData(
            self.client, self.secret_version, watching=SECRETS_INDEX in self.indices
        )
        self.permissions = Permissions(self.client)

    def secret_version(self, namespace: str, name: str) -> str | None:
        """The resourceVersion the Secret watch saw last (None: it saw none)."""
        seen = self.secret_seen(namespace, name)
        return None if seen is None else seen.resource_version

    async def current(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Our resource ``kind`` (KVCluster, TracingPipeline) as the watch saw it last, a copy
        (kopf updates its index before it hands an event's body to a handler, and events of
        one object come in order: never older than a body any handler got, nor than what an
        earlier reconcile read), None when it is gone. Read from the API server when kopf's
        index is not there (handlers called without kopf)."""
        index = self.indices.get(OBJECTS_INDICES[kind])
        if index is None:
            return await get_object(self.client, RESOURCES[kind], name, namespace)
        store = index.get((namespace, name))
        return copy.deepcopy(next(iter(store))) if store else None

    def request(self, kind: str, namespace: str, name: str, *, apply: bool = True) -> None:
        """Ask for a reconcile of another object (coalesced, never waited for)."""
        self.requests.request(kind, namespace, name, apply=apply)

    def children_of(self, owner_uid: str) -> dict[ChildKey, Seen] | None:
        """The owner's children as the watch saw them last (handlers/children.py); None when
        kopf's indices are not there (handlers called without kopf: the caller lists them)."""
        if not all(index in self.indices for index in CHILDREN_INDICES):
            return None
        found: dict[ChildKey, Seen] = {}
        for index in CHILDREN_INDICES:
            for child in self.indices[index].get(owner_uid, ()):
                found[(child.kind, child.name)] = child
        return found

    def secret_seen(self, namespace: str, name: str) -> Found | None:
        """The version and key names of a Secret as the watch saw it last (handlers/
        secret_watch.py); None when it saw none (or runs without kopf): the caller reads it."""
        store = (self.indices.get(SECRETS_INDEX) or {}).get((namespace, name))
        return next(iter(store), None) if store else None

    def lock(
        self, kind: str, namespace: str, name: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """The object's own lock, then one of ``reconcile_concurrency`` places of its kind:
        a reconcile waits for both before it reads the object (first come, first served)."""
        return self._locked_and_placed(kind, (kind, namespace, name))

    @contextlib.asynccontextmanager
    async def _locked_and_placed(self, kind: str, key: ObjectKey) -> AsyncIterator[None]:
        places = self._places.get(kind)
        if places is None:
            places = self._places[kind] = asyncio.Semaphore(
                max(1, self.options.reconcile_concurrency)
            )
        async with self.locks.hold(key), places:
            yield

    def forget(self, kind: str, namespace: str, name: str, uid: str | None) -> None:
        """Drop the per-object entries of a deleted KVCluster or TracingPipeline. A reconcile
        under way (a queued request that read the object just before its deletion) may still
        record its uid once: those entries are dropped again a little later. Once deletions
        have been quiet for RELEASE_AFTER_S, the memory goes back (release_memory)."""
        with contextlib.suppress(RuntimeError):  # no running loop: nothing can be under way
            if uid:
                asyncio.get_running_loop().call_later(LATE_WRITES_S, self._forget_uid, uid)
        self.deletion_seen()
        if uid:
            self._forget_uid(uid)
        if kind == PIPELINE:
            self.deliveries.pop((namespace, name), None)
            return
        task = self.rechecks.pop((namespace, name), None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def deletion_seen(self) -> None:
        """A resource or one of our children was deleted: once deletions have been quiet for
        RELEASE_AFTER_S the memory goes back (release_memory). Children count too: the
        garbage collector deletes them for a while after their owners went, and what their
        events allocated is freed only then."""
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to release later
            loop = asyncio.get_running_loop()
            if self._release is not None:
                self._release.cancel()
            self._release = loop.call_later(RELEASE_AFTER_S, self._released)

    def _released(self) -> None:
        self._release = None
        self._releasing = asyncio.get_running_loop().create_task(self._release_memory())

    async def _release_memory(self) -> None:
        """The connections idle since the burst closed (refresh_pool), then release_memory."""
        await refresh_pool(self.client)
        release_memory()

    def _forget_uid(self, uid: str) -> None:
        self.validated.pop(uid, None)
        self.applied.pop(uid, None)
        self.certificates_kept.pop(uid, None)

    def sizes(self) -> dict[str, int]:
        """Entries per store (the operator's metrics show them: they return to their
        baseline once the objects are gone)."""
        return {
            "locks": len(self.locks),
            "requests": len(self.requests),
            "validated": len(self.validated),
            "applied": len(self.applied),
            "certificates_kept": len(self.certificates_kept),
            "secret_data": len(self.secret_data),
            "deliveries": len(self.deliveries),
            "rechecks": len(self.rechecks),
            "injection_events": len(self.injection_events),
        }
