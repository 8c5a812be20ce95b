"""What both resources' reconciles share: applying children, status writing, events.
Per-run state (options, locks, what was accepted) is the Runtime on kopf's memo
(handlers/runtime.py), passed in; nothing here is kept between calls."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

import kopf
from lightkube import AsyncClient

from kvtrace.shared.api import GROUP, VERSION
from kvtrace_operator import k8s, tracing
from kvtrace_operator.handlers.metrics import METRICS
from kvtrace_operator.handlers.runtime import OBJECTS_INDICES, Runtime
from kvtrace_operator.render.status import find_condition

log = logging.getLogger("kvtrace_operator")


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime(TIME_FORMAT)


def seconds_since(stamp: str) -> float:
    then = datetime.datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep plain-dict copy of a kopf body (the render layer wants plain dicts)."""

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return copy.copy(value)

    return convert(body)  # type: ignore[no-any-return]


async def write_status(
    client: AsyncClient, res: Any, owner: Mapping[str, Any], status: dict[str, Any]
) -> None:
    """Patch ``status`` when it differs from what the owner already shows; post an event
    when the Ready condition flips, and when TraceDelivery becomes True or False. A new
    object's first Ready=False is no flip: its condition says why (and a reason worth a
    warning, InvalidSpec or SecretNotFound, has its own event), and a member set starting up
    would otherwise post one event per object created."""
    previous = owner.get("status") or {}
    if all(previous.get(key) == value for key, value in status.items()):
        return
    meta = owner["metadata"]
    with tracing.span("write status", {"kvtrace.phase": str(status.get("phase", ""))}):
        await k8s.patch_status(client, res, meta["name"], meta["namespace"], status)
    before, after = find_condition(previous, "Ready"), find_condition(status, "Ready")
    if after and (before or {}).get("status") != after["status"]:
        ready = after["status"] == "True"
        if before is not None or ready:
            await k8s.post_event(
                client,
                owner,
                "Ready" if ready else "NotReady",
                f"{after['reason']}: {after['message']}",
                "Normal" if ready else "Warning",
            )
    before, after = (
        find_condition(previous, "TraceDelivery"),
        find_condition(status, "TraceDelivery"),
    )
    if after and after["status"] != "Unknown" and (before or {}).get("status") != after["status"]:
        delivered = after["status"] == "True"
        await k8s.post_event(
            client,
            owner,
            "TraceDelivered" if delivered else "TraceDeliveryFailed",
            f"{after['reason']}: {after['message']}",
            "Normal" if delivered else "Warning",
        )


def in_step(rendered: list[dict[str, Any]], observed: list[dict[str, Any]]) -> bool:
    """Whether every rendered workload exists with the pod template checksum and replica
    count rendered now."""
    current = {w["name"]: (w["configChecksum"], w["desired"]) for w in observed}
    wanted = {w["name"]: (w["configChecksum"], w["desired"]) for w in k8s.workloads_of(rendered)}
    return all(current.get(name) == state for name, state in wanted.items())


async def converge(
    runtime: Runtime,
    owner: Mapping[str, Any],
    children: list[dict[str, Any]],
    *,
    apply_all: bool,
    written: Mapping[k8s.ChildKey, Mapping[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], k8s.Changes | None]:
    """Apply the children that drifted (always when ``apply_all``; otherwise only when the
    observed workloads lag behind the render, e.g. the pipeline changed meanwhile; those in
    ``written`` were applied by this reconcile already: handlers/certificates.py), and return
    the observed workloads, so the status never describes a state that is not applied. The
    owner's children come from the watch (handlers/children.py) when kopf runs: a reconcile
    where nothing drifted sends no request here."""
    client, uid = runtime.client, owner["metadata"]["uid"]
    observed = runtime.children_of(uid)
    if not apply_all:
        with tracing.span("observe workloads") as step:
            workloads = (
                [seen.workload for seen in observed.values() if seen.workload is not None]
                if observed is not None
                else await k8s.read_workloads(client, owner["metadata"]["namespace"], children)
            )
            step.set("kvtrace.in_step", in_step(children, workloads))
        if in_step(children, workloads):
            return workloads, None
    with tracing.span("apply children", {"kvtrace.children": len(children)}) as step:
        changes = await apply(runtime, owner, children, observed, written or {})
        for action, items in (
            ("created", changes.created),
            ("updated", changes.updated),
            ("deleted", changes.deleted),
        ):
            step.set(f"kvtrace.children.{action}", len(items))
        step.set("kvtrace.children.unchanged", len(children) - len(changes.applied))
    return changes.workloads, changes


async def apply(
    runtime: Runtime,
    owner: Mapping[str, Any],
    children: list[dict[str, Any]],
    observed: Mapping[k8s.ChildKey, k8s.Seen] | None,
    written: Mapping[k8s.ChildKey, Mapping[str, Any]],
) -> k8s.Changes:
    """Apply the children that drifted since the last apply and prune the stale ones, with an
    event per kind of action (the render was dry-run when it changed: handlers/certificates.py);
    a child that had to be deleted (immutable field) is retried shortly."""
    client, uid = runtime.client, owner["metadata"]["uid"]
    try:
        changes = await k8s.apply_children(
            client,
            owner,
            children,
            observed=observed,
            last=runtime.applied.get(uid),
            written=written,
        )
    except k8s.Recreating as exc:
        await k8s.post_event(client, owner, "Recreating", str(exc), "Warning")
        raise kopf.TemporaryError(str(exc), delay=2) from exc
    runtime.applied[uid] = changes.last
    await report_changes(client, owner, changes)
    return changes


async def report_changes(
    client: AsyncClient, owner: Mapping[str, Any], changes: k8s.Changes
) -> None:
    """One event per kind of action: Created, Updated, Deleted (children)."""
    for reason, items in (
        ("Created", changes.created),
        ("Updated", changes.updated),
        ("Deleted", changes.deleted),
    ):
        METRICS.child_actions(owner["kind"], reason.lower(), len(items))
        if items:
            log.info(
                "%s %s/%s: %s", reason, owner["kind"], owner["metadata"]["name"], ", ".join(items)
            )
            await k8s.post_event(client, owner, reason, ", ".join(items))


async def report_spec_error(client: AsyncClient, owner: Mapping[str, Any], message: str) -> None:
    """A Warning event, once per distinct error (the Ready condition carries it too)."""
    ready = find_condition(owner.get("status"), "Ready") or {}
    if ready.get("reason") == "InvalidSpec" and message in ready.get("message", ""):
        return
    log.warning(
        "invalid %s %s/%s: %s",
        owner["kind"],
        owner["metadata"]["namespace"],
        owner["metadata"]["name"],
        message,
    )
    await k8s.post_event(client, owner, "InvalidSpec", message, "Warning")


async def fresh(runtime: Runtime, kind: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The object as the API server holds it now, as far as the operator knows it (its watch:
    Runtime.current): the body a handler, a timer or a queued request started with may be
    older, and applying it would undo a newer update. None when it is gone, being deleted, or
    replaced by another object of the same name (uid)."""
    meta = body["metadata"]
    current = await runtime.current(kind, meta["namespace"], meta["name"])
    if current is None or current["metadata"].get("deletionTimestamp"):
        return None
    if meta.get("uid") and current["metadata"].get("uid") != meta["uid"]:
        return None
    return plain(current)


# Annotations holding a whole copy of the object (kopf's diff base, kubectl's client-side
# apply): no reconcile reads them, and kept per object they would double what is held.
COPY_ANNOTATIONS = (
    f"{GROUP}/last-handled-configuration",
    "kubectl.kubernetes.io/last-applied-configuration",
)


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a reconcile reads of our resource (a plain copy): without its managedFields and
    the annotations that copy it (COPY_ANNOTATIONS)."""
    obj = plain(body)
    meta = obj["metadata"]
    meta.pop("managedFields", None)
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in COPY_ANNOTATIONS
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return obj


def register_objects_index(registry: kopf.OperatorRegistry, kind: str, plural: str) -> None:
    """kopf's index of our resources ``plural``: (namespace, name) -> the object as slim()
    keeps it (Runtime.current reads it; kopf drops the entry when the object goes)."""

    @kopf.index(GROUP, VERSION, plural, id=OBJECTS_INDICES[kind], registry=registry)
    async def by_name(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], dict[str, Any]]:
        return {(namespace or "", name): slim(body)}


async def unless_stopped(stopped: kopf.DaemonStopped, work: Coroutine[Any, Any, object]) -> None:
    """A timer's ``work``, cancelled as soon as kopf stops the timer (its resource is being
    deleted): kopf lets a deleted resource go only once its timers have exited, and looks
    again at one still running only much later. Cancelling a reconcile is safe: applies are
    idempotent, and the resource is going anyway."""
    task = asyncio.ensure_future(work)

    async def stopping() -> None:
        await stopped.wait()

    waiter = asyncio.ensure_future(stopping())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
    with contextlib.suppress(asyncio.CancelledError):
        await task  # its exception, if it failed (kopf logs it and retries the timer)
