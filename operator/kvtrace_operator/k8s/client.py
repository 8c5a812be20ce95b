"""The lightkube client, our custom resource types, reading objects and writing status."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from kvtrace.shared import api

log = logging.getLogger("kvtrace_operator")

KVCluster = create_namespaced_resource(api.GROUP, api.VERSION, api.KVCLUSTER, api.KVCLUSTER_PLURAL)
TracingPipeline = create_namespaced_resource(
    api.GROUP, api.VERSION, api.PIPELINE, api.PIPELINE_PLURAL
)


# Requests of the operator in flight at once (client-go's controllers bound theirs too): more
# only queue in the API server, where they time out and make every handler start over.
IN_FLIGHT = 24

# Who goes first when every slot is taken (request_priority): lower first, then the earlier.
FIRST, RECONCILE, LAST = 0, 1, 2
Priority = tuple[int, float]  # (level, when the work that sends the request began)
_PRIORITY: contextvars.ContextVar[Priority | None] = contextvars.ContextVar(
    "kvtrace_request_priority", default=None
)


@contextlib.contextmanager
def request_priority(level: int) -> Iterator[None]:
    """The requests sent from inside (this task and the tasks it starts) wait for a slot of
    the InFlight transport at ``level``, ordered by when this block began: a whole piece of
    work (a reconcile) gets ahead of the ones that began after it, instead of every piece
    moving one request at a time and all of them finishing together at the end. Nested
    blocks keep the outer one's time."""
    outer = _PRIORITY.get()
    token = _PRIORITY.set((level, outer[1] if outer else time.monotonic()))
    try:
        yield
    finally:
        _PRIORITY.reset(token)


class Slots:
    """At most ``limit`` holders at once; the waiters get a freed slot by priority, then in
    the order they came (a semaphore served by priority)."""

    def __init__(self, limit: int) -> None:
        self.free = limit
        self._waiters: list[tuple[Priority, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def acquire(self, priority: Priority) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._arrivals), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if not granted.cancelled():  # the slot was handed over just before: pass it on
                self.release()
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, granted = heapq.heappop(self._waiters)
            if not granted.done():  # a cancelled waiter is skipped
                granted.set_result(None)
                return
        self.free += 1


class InFlight(httpx2.AsyncBaseTransport):
    """A transport that lets at most ``limit`` requests be in flight (sent and their response
    not read yet); the others wait here, where no timeout runs, not in the API server, and
    are sent by their request_priority() (requests sent outside one go last)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int) -> None:
        self.inner, self.slots = inner, Slots(limit)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await self.slots.acquire(_PRIORITY.get() or (LAST, time.monotonic()))
        try:
            response = await self.inner.handle_async_request(request)
            try:
                await response.aread()  # the slot is held until the whole answer is in
            except BaseException:
                await response.aclose()
                raise
            return response
        finally:
            self.slots.release()

    async def aclose(self) -> None:
        await self.inner.aclose()


def make_client(timeout: float = 30.0, in_flight: int = IN_FLIGHT) -> AsyncClient:
    """A client for the in-cluster service account, else ``$KUBECONFIG``/``~/.kube/config``,
    with at most ``in_flight`` requests in flight (InFlight); ``timeout`` runs per request
    once it is sent."""
    client = AsyncClient(
        config=KubeConfig.from_env(),
        field_manager=api.FIELD_MANAGER,
        timeout=httpx2.Timeout(timeout, pool=None),
    )
    adapter = client._client._client  # noqa: SLF001 - lightkube takes no transport of its own
    adapter._transport = InFlight(adapter._transport, in_flight)  # noqa: SLF001 - as above
    return client


async def refresh_pool(client: AsyncClient) -> None:
    """One cheap request (``GET /version``: any authenticated user may) through ``client``'s
    connection pool, best effort. At startup it loads the HTTP stack (httpcore2, anyio, h11,
    h2 and what they import: ~2 MiB of modules, imported on the first request), so the
    baseline memory holds it; after a burst it lets the pool close the connections idle past
    their keep-alive (each holds an asyncio TLS buffer of 128 KiB): the pool looks only when a
    request comes, and an idle operator sends none."""
    adapter = client._client._client  # noqa: SLF001 - lightkube has no raw request of its own
    try:
        await adapter.get("/version")
    except httpx2.HTTPError as exc:
        log.debug("GET /version failed: %s", exc)


def request_resource(path: str) -> str:
    """The resource a request's URL path addresses: its plural, with ``/SUBRESOURCE`` (e.g.
    ``statefulsets``, ``kvclusters/status``); ``""`` for paths that name none."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts[:-1]:
        after = parts[parts.index("namespaces") + 2 :]
    else:  # cluster-scoped: /api/v1/PLURAL/... or /apis/GROUP/VERSION/PLURAL/...
        after = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if not after:
        return "namespaces" if "namespaces" in parts else ""
    return after[0] if len(after) < 3 else f"{after[0]}/{after[2]}"


def count_requests(client: AsyncClient, count: Callable[[str, str, bool], None]) -> None:
    """Call ``count(method, resource, dry_run)`` for every request ``client`` sends (the
    operator's metrics; a test counts the writes of a reconcile with it)."""

    async def hook(request: httpx2.Request) -> None:
        params: Mapping[str, str] = request.url.params
        count(request.method, request_resource(request.url.path), "dryRun" in params)

    # lightkube's own httpx client: its request hooks see every request, watches included
    adapter = client._client._client  # noqa: SLF001 - lightkube has no request hook of its own
    adapter.event_hooks["request"].append(hook)


def resource_class(api_version: str, kind: str) -> Any:
    """The lightkube resource class of ``apiVersion``/``kind`` (ours included)."""
    return resource_registry.load(api_version, kind)


def to_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


async def get_object(
    client: AsyncClient, res: Any, name: str, namespace: str
) -> dict[str, Any] | None:
    """The object as a plain dict, or None when it does not exist."""
    try:
        return to_dict(await client.get(res, name, namespace=namespace))
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


async def patch_status(
    client: AsyncClient, res: Any, name: str, namespace: str, status: dict[str, Any]
) -> None:
    """Merge-patch the ``status`` subresource (lists such as ``conditions`` are replaced
    whole). A resource deleted meanwhile is not an error."""
    try:
        await client.patch(
            res.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
        )
    except ApiError as exc:
        if exc.status.code != 404:
            raise
