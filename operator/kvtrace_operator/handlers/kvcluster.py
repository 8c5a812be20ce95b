"""KVCluster handlers: one idempotent reconcile for resume, create, update, the drift timer,
pipeline changes and children's events; and the index of clusters by pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from lightkube import ApiError, AsyncClient

from kvtrace.shared.api import GROUP, KVCLUSTER_PLURAL, VERSION
from kvtrace_operator import k8s
from kvtrace_operator import tracing as own_tracing
from kvtrace_operator.handlers import common, secret_watch
from kvtrace_operator.handlers.metrics import METRICS
from kvtrace_operator.render import (
    SpecError,
    otel_environment,
    pipeline_ref,
    render_kvcluster,
    validate_pipeline,
)
from kvtrace_operator.render.sampling import mode as sampling_mode
from kvtrace_operator.render.secret_refs import made_by_pipeline
from kvtrace_operator.render.status import (
    find_condition,
    kvcluster_status,
    tracing_state,
    workload_summary,
)

INDEX = "clusters_by_pipeline"
log = logging.getLogger("kvtrace_operator")


def index_key(namespace: str, pipeline: str) -> tuple[str, str]:
    return namespace, pipeline


def consumers(index: Mapping[Any, Iterable[str]] | None, namespace: str, pipeline: str) -> list[str]:
    """Names of the KVClusters in ``namespace`` referencing ``pipeline`` (from the index)."""
    if index is None:
        return []
    return sorted(set(index.get(index_key(namespace, pipeline), ())))


async def resolve_pipeline(client: AsyncClient, cluster: Mapping[str, Any]
                           ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The referenced pipeline if it exists and is valid (else None), and the tracing state."""
    ref = pipeline_ref(dict(cluster))
    if not ref:
        return None, tracing_state(None, found=False)
    pipeline = await k8s.get_object(client, k8s.TracingPipeline, ref, cluster["metadata"]["namespace"])
    if pipeline is None:
        return None, tracing_state(ref, found=False)
    try:
        validate_pipeline(pipeline)
    except SpecError as exc:
        return None, tracing_state(ref, found=True, error=str(exc))
    valid = find_condition(pipeline.get("status"), "ConfigValid")
    if valid is not None and valid.get("status") == "False":  # e.g. the API server rejected a child
        return None, tracing_state(ref, found=True, error=str(valid.get("message", "")))
    env = {v["name"]: v.get("value", "") for v in otel_environment(dict(cluster), pipeline)}
    return pipeline, tracing_state(ref, found=True, endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
                                   mode=sampling_mode(pipeline.get("spec") or {}),
                                   sampler=env.get("OTEL_TRACES_SAMPLER", ""))


async def reconcile(client: AsyncClient, cluster: Mapping[str, Any], *, apply: bool = True) -> bool:
    """Render everything, then apply it all (or, with ``apply=False``, only observe unless
    something lags behind) and write the status. An invalid spec becomes conditions and an
    event; nothing is applied. True while leaving members still drain (a background task
    then reconciles again every ``retry_backoff`` seconds until they are done)."""
    cluster = common.plain(cluster)
    meta = cluster["metadata"]
    async with common.lock("KVCluster", meta["namespace"], meta["name"]):
        with METRICS.reconcile("KVCluster") as result, own_tracing.reconcile("KVCluster", cluster, result):
            pipeline, tracing = await resolve_pipeline(client, cluster)
            try:
                with own_tracing.span("render"):
                    children = render_kvcluster(cluster, pipeline)
            except SpecError as exc:
                result["outcome"] = "invalid_spec"
                await common.write_status(client, k8s.KVCluster, cluster, kvcluster_status(
                    cluster, statefulset=None, tracing=tracing, now=common.now(), spec_error=str(exc)))
                await common.report_spec_error(client, cluster, str(exc))
                return False
            try:
                gate = await secret_watch.check(client, cluster, children,
                                                pending=made_by_pipeline(pipeline) if pipeline else ())
                if gate.blocked:  # nothing applied: the members could not start
                    result["outcome"] = "secret_not_found"
                    observed = await k8s.read_workloads(client, meta["namespace"], children)
                    await common.write_status(client, k8s.KVCluster, cluster, gate.status(cluster, kvcluster_status(
                        cluster, statefulset=next(iter(observed), None), tracing=tracing, now=common.now())))
                    await secret_watch.report_missing(client, cluster, gate)
                    return False
                children = gate.children
                with own_tracing.span("drain check") as step:
                    draining = await hold_leaving_members(client, cluster, children)
                    step.set("kvtrace.draining", ", ".join(draining))
                workloads, changes = await common.converge(client, cluster, children, apply_all=apply)
                if changes is not None:
                    await report_scaling(client, cluster, changes)
            except k8s.Rejected as exc:
                result["outcome"] = "invalid_spec"
                await common.write_status(client, k8s.KVCluster, cluster, kvcluster_status(
                    cluster, statefulset=None, tracing=tracing, now=common.now(), spec_error=str(exc)))
                await common.report_spec_error(client, cluster, str(exc))
                return False
            except ApiError as exc:
                if not k8s.is_forbidden(exc):
                    raise
                result["outcome"] = "forbidden"
                await secret_watch.report_forbidden(client, k8s.KVCluster, cluster, exc)
                return False
            statefulset = next((w for w in workloads if w["kind"] == "StatefulSet"), None)
            await common.write_status(client, k8s.KVCluster, cluster, gate.status(cluster, kvcluster_status(
                cluster, statefulset=statefulset, tracing=tracing, now=common.now(), draining=draining)))
    if draining:
        recheck_while_draining(client, meta["namespace"], meta["name"])
    return bool(draining)


_rechecks: dict[tuple[str, str], asyncio.Task[None]] = {}


def recheck_while_draining(client: AsyncClient, namespace: str, name: str) -> None:
    """Reconcile again every ``retry_backoff`` seconds until the drain is over (one task per
    cluster; nothing else would trigger a reconcile while members only stream data)."""
    running = _rechecks.get((namespace, name))
    if running is not None and not running.done():
        return

    async def loop() -> None:
        while True:
            await asyncio.sleep(common.options.retry_backoff)
            try:
                cluster = await k8s.get_object(client, k8s.KVCluster, name, namespace)
                if cluster is None or cluster["metadata"].get("deletionTimestamp"):
                    return
                if not await reconcile(client, cluster):
                    return
            except Exception as exc:  # noqa: BLE001 - logged; the next round retries
                log.warning("drain check of %s/%s failed: %s", namespace, name, exc)

    _rechecks[(namespace, name)] = asyncio.get_running_loop().create_task(loop())


def draining_since(cluster: Mapping[str, Any]) -> str | None:
    """When the current drain began (the Progressing/Draining condition's transition)."""
    cond = find_condition(cluster.get("status"), "Progressing") or {}
    return cond.get("lastTransitionTime") if cond.get("reason") == "Draining" else None


async def hold_leaving_members(client: AsyncClient, cluster: Mapping[str, Any],
                               children: list[dict[str, Any]]) -> list[str]:
    """Scaling down drains first: the rendered peers file already leaves the last members
    out (they see it and hand their data over), but the StatefulSet keeps them until each
    reports it is drained, or ``drain_timeout`` passed. Returns the members still draining
    (and then raises the rendered StatefulSet's replicas back to keep them)."""
    sts = next(obj for obj in children if obj["kind"] == "StatefulSet")
    desired = int(sts["spec"]["replicas"])
    current = await k8s.get_object(client, k8s.resource_class("apps/v1", "StatefulSet"),
                                   sts["metadata"]["name"], cluster["metadata"]["namespace"])
    kept = int((current or {}).get("spec", {}).get("replicas") or 0)
    if kept <= desired or common.options.drain_timeout <= 0:
        return []
    ordinals = list(range(desired, kept))
    views = await k8s.member_views(cluster, ordinals)
    name = sts["metadata"]["name"]
    pending = [f"{name}-{i}" for i, view in zip(ordinals, views) if not k8s.drained(view)]
    since = draining_since(cluster)
    if not pending:
        await k8s.post_event(client, cluster, "Drained", f"{name}-{desired}..{name}-{kept - 1} handed "
                             f"their data over; scaling the StatefulSet down to {desired}")
        return []
    if since is not None and common.seconds_since(since) > common.options.drain_timeout:
        await k8s.post_event(client, cluster, "DrainTimeout",
                             f"{', '.join(pending)} did not report drained within "
                             f"{common.options.drain_timeout:g}s; removing them anyway (their data "
                             "has other replicas; anti-entropy restores the replication factor)",
                             "Warning")
        return []
    if since is None:
        await k8s.post_event(client, cluster, "Draining",
                             f"{', '.join(pending)} left the peers file; they hand their data over "
                             f"before the StatefulSet scales down to {desired}")
    sts["spec"]["replicas"] = kept
    return pending


async def report_scaling(client: AsyncClient, cluster: Mapping[str, Any], changes: k8s.Changes) -> None:
    for obj in changes.applied:
        if obj["kind"] != "StatefulSet":
            continue
        before = changes.previous.get(k8s.child_key(obj))
        if before is None:
            return
        old = workload_summary(before)["desired"]
        new = workload_summary(obj)["desired"]
        if old != new:
            await k8s.post_event(client, cluster, "Scaling",
                                 f"membership {old} -> {new}: peers file rewritten, "
                                 f"existing members keep running and rebalance")


async def reconcile_named(client: AsyncClient, namespace: str, name: str, *, apply: bool = True) -> None:
    """Reconcile a KVCluster known only by name (from a pipeline or a child's event)."""
    cluster = await k8s.get_object(client, k8s.KVCluster, name, namespace)
    if cluster is None or cluster["metadata"].get("deletionTimestamp"):
        return
    await reconcile(client, cluster, apply=apply)


async def sync_consumers(client: AsyncClient, namespace: str, pipeline: str, names: list[str]) -> None:
    """Keep a pipeline's ``status.consumers`` in step with the clusters referencing it."""
    current = await k8s.get_object(client, k8s.TracingPipeline, pipeline, namespace)
    if current is not None and (current.get("status") or {}).get("consumers") != names:
        await k8s.patch_status(client, k8s.TracingPipeline, pipeline, namespace, {"consumers": names})


def register(registry: kopf.OperatorRegistry, options: common.Options) -> None:
    from kvtrace_operator.handlers import pipeline as pipelines  # it imports this module
    resource = (GROUP, VERSION, KVCLUSTER_PLURAL)

    async def consumers_changed(client: AsyncClient, namespace: str, refs: Iterable[str | None], index: Any) -> None:
        """The pipelines ``refs`` gained or lost this cluster as a consumer: their status lists
        their consumers, and their collector accepts exactly the consumers' tokens (a cluster
        deleted or pointed elsewhere has its token revoked here)."""
        for ref in sorted(r for r in refs if r):
            names = consumers(index, namespace, ref)
            await sync_consumers(client, namespace, ref, names)
            await pipelines.reconcile_named(client, namespace, ref, names)

    @kopf.index(*resource, id=INDEX, registry=registry)
    def clusters_by_pipeline(namespace: str | None, name: str, spec: kopf.Spec, **_: Any
                             ) -> dict[tuple[str, str], str] | None:
        ref = pipeline_ref({"spec": dict(spec)})
        return {index_key(namespace or "", ref): name} if ref else None

    @kopf.on.resume(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    @kopf.on.create(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    @kopf.on.update(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    async def reconcile_handler(body: kopf.Body, old: Any, memo: kopf.Memo, **kwargs: Any) -> None:
        await reconcile(memo.client, body)
        namespace = body["metadata"]["namespace"]
        index = kwargs[INDEX]
        refs = {pipeline_ref(common.plain(body)), pipeline_ref({"spec": dict((old or {}).get("spec") or {})})}
        await consumers_changed(memo.client, namespace, refs, index)

    @kopf.timer(*resource, id="resync", interval=options.resync_interval,
                initial_delay=options.resync_interval, registry=registry)
    async def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await reconcile(memo.client, body)

    @kopf.on.event(*resource, id="deleted", registry=registry)
    async def deleted(type: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        if type != "DELETED":
            return
        await consumers_changed(memo.client, body["metadata"]["namespace"], [pipeline_ref(common.plain(body))],
                                kwargs[INDEX])
