"""KVCluster handlers: one idempotent reconcile for resume, create, update, the drift timer,
and requests (a pipeline's change, a child's event, a Secret's change). Every reconcile
re-reads the cluster under its lock, so no handler, timer or request ever applies a spec
older than the API server's. A change of the cluster's pipeline reference asks for a
reconcile of the pipelines concerned (their consumers and token sets), never waiting for it.
Imports no other resource's handler module."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from lightkube import ApiError, AsyncClient

from kvtrace.shared.api import GROUP, KVCLUSTER, KVCLUSTER_PLURAL, PIPELINE, VERSION
from kvtrace_operator import k8s
from kvtrace_operator import tracing as own_tracing
from kvtrace_operator.handlers import certificates, common, secret_gate
from kvtrace_operator.handlers.metrics import METRICS
from kvtrace_operator.handlers.runtime import Options, Runtime
from kvtrace_operator.render import (
    SpecError,
    otel_environment,
    pipeline_ref,
    render_kvcluster,
    validate_pipeline,
)
from kvtrace_operator.render.secret_refs import made_by_pipeline, made_for_members
from kvtrace_operator.render.status import (
    TRACING_NOT_FOUND,
    find_condition,
    kvcluster_status,
    tracing_state,
    workload_summary,
)
from kvtrace_operator.spec import parse_pipeline

log = logging.getLogger("kvtrace_operator")


async def resolve_pipeline(
    runtime: Runtime, cluster: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The referenced pipeline if it exists and is valid (else None), and the tracing state."""
    ref = pipeline_ref(dict(cluster))
    if not ref:
        return None, tracing_state(None, found=False)
    pipeline = await runtime.current(PIPELINE, cluster["metadata"]["namespace"], ref)
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
    return pipeline, tracing_state(
        ref,
        found=True,
        endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        mode=parse_pipeline(pipeline.get("spec")).sampling.mode,
        sampler=env.get("OTEL_TRACES_SAMPLER", ""),
    )


async def reconcile(runtime: Runtime, body: Mapping[str, Any], *, apply: bool = True) -> bool:
    """Re-read the cluster, render everything, then apply it all (or, with ``apply=False``,
    only observe unless something lags behind) and write the status. An invalid spec becomes
    conditions and an event; nothing is applied. True while leaving members still drain, or
    while a new cluster waits for its pipeline (pipeline_awaited: nothing applied yet); a
    background task then reconciles again every ``retry_backoff`` seconds until that is over.
    Nothing happens when the cluster is gone or being deleted."""
    meta = body["metadata"]
    client = runtime.client
    async with runtime.lock(KVCLUSTER, meta["namespace"], meta["name"]):
        cluster = await common.fresh(runtime, KVCLUSTER, body)
        if cluster is None:
            return False
        with (
            k8s.request_priority(k8s.RECONCILE),  # the earlier reconciles' requests first
            METRICS.reconcile("KVCluster") as result,
            own_tracing.reconcile("KVCluster", cluster, result),
        ):
            pipeline, tracing = await resolve_pipeline(runtime, cluster)
            if tracing["reason"] == TRACING_NOT_FOUND and pipeline_awaited(runtime, cluster):
                awaited = tracing_state(
                    tracing["pipeline"], found=False, awaited_s=runtime.options.pipeline_grace
                )
                status = kvcluster_status(
                    cluster, statefulset=None, tracing=awaited, now=common.now()
                )
                await common.write_status(client, k8s.KVCluster, cluster, status)
                recheck_later(runtime, meta["namespace"], meta["name"])
                return True

            async def refuse(exc: Exception) -> None:
                """An invalid spec: conditions and an event, nothing applied."""
                result["outcome"] = "invalid_spec"
                status = kvcluster_status(
                    cluster,
                    statefulset=None,
                    tracing=tracing,
                    now=common.now(),
                    spec_error=str(exc),
                )
                await common.write_status(client, k8s.KVCluster, cluster, status)
                await common.report_spec_error(client, cluster, str(exc))

            try:
                with own_tracing.span("render"):
                    children = render_kvcluster(cluster, pipeline, images=runtime.options.images)
            except SpecError as exc:
                await refuse(exc)
                return False
            try:
                prepared = await certificates.prepare(runtime, cluster, children)  # TLS first
                children, written = prepared.children, prepared.written
                pending = (made_by_pipeline(pipeline) if pipeline else set()) | made_for_members(
                    cluster
                )
                gate = await secret_gate.check(runtime, cluster, children, pending=pending)
                if gate.blocked:  # nothing applied: the members could not start
                    result["outcome"] = "secret_not_found"
                    observed = await k8s.read_workloads(client, meta["namespace"], children)
                    await common.write_status(
                        client,
                        k8s.KVCluster,
                        cluster,
                        gate.status(
                            cluster,
                            kvcluster_status(
                                cluster,
                                statefulset=next(iter(observed), None),
                                tracing=tracing,
                                now=common.now(),
                            ),
                        )
                        | {"tls": prepared.tls},
                    )
                    await secret_gate.report_missing(client, cluster, gate)
                    return False
                children = gate.children
                with own_tracing.span("drain check") as step:
                    draining = await hold_leaving_members(runtime, cluster, children)
                    step.set("kvtrace.draining", ", ".join(draining))
                workloads, changes = await common.converge(
                    runtime, cluster, children, apply_all=apply, written=written | gate.written
                )
                if changes is not None:
                    await report_scaling(client, cluster, changes)
            except (k8s.Rejected, SpecError) as exc:  # SpecError: certManager without cert-manager
                await refuse(exc)
                return False
            except ApiError as exc:
                if not k8s.is_forbidden(exc):
                    raise
                result["outcome"] = "forbidden"
                await secret_gate.report_forbidden(client, k8s.KVCluster, cluster, exc)
                return False
            statefulset = next((w for w in workloads if w["kind"] == "StatefulSet"), None)
            await common.write_status(
                client,
                k8s.KVCluster,
                cluster,
                gate.status(
                    cluster,
                    kvcluster_status(
                        cluster,
                        statefulset=statefulset,
                        tracing=tracing,
                        now=common.now(),
                        draining=draining,
                    ),
                )
                | {"tls": prepared.tls},
            )
    if draining:
        recheck_later(runtime, meta["namespace"], meta["name"])
    return bool(draining)


def pipeline_awaited(runtime: Runtime, cluster: Mapping[str, Any]) -> bool:
    """Whether a cluster whose pipeline does not exist waits for it instead of starting its
    members untraced: only a new one (no StatefulSet yet, created less than ``pipeline_grace``
    seconds ago), as when both are applied from one folder and the cluster comes first; its
    members would otherwise start untraced and roll a moment later, once the pipeline and its
    Secrets exist. Never without the watch on the children (handlers called without kopf)."""
    grace, meta = runtime.options.pipeline_grace, cluster["metadata"]
    observed = runtime.children_of(meta["uid"])
    if grace <= 0 or observed is None or not meta.get("creationTimestamp"):
        return False
    if any(kind == "StatefulSet" for kind, _ in observed):
        return False
    return common.seconds_since(meta["creationTimestamp"]) < grace


def recheck_later(runtime: Runtime, namespace: str, name: str) -> None:
    """Reconcile again every ``retry_backoff`` seconds while reconcile() says so: leaving
    members still drain, or a new cluster waits for its pipeline (one task per cluster,
    dropped when it ends; nothing else would trigger a reconcile while members only stream
    data, or when the pipeline never comes)."""
    key = (namespace, name)
    running = runtime.rechecks.get(key)
    if running is not None and not running.done():
        return

    async def loop() -> None:
        try:
            while True:
                await asyncio.sleep(runtime.options.retry_backoff)
                try:
                    if not await reconcile(
                        runtime, {"metadata": {"namespace": namespace, "name": name}}
                    ):
                        return
                except Exception as exc:  # noqa: BLE001 - logged; the next round retries
                    log.warning("drain check of %s/%s failed: %s", namespace, name, exc)
        finally:
            if runtime.rechecks.get(key) is asyncio.current_task():
                del runtime.rechecks[key]

    runtime.rechecks[key] = asyncio.get_running_loop().create_task(loop())


async def statefulset_replicas(runtime: Runtime, cluster: Mapping[str, Any], name: str) -> int:
    """The StatefulSet's replicas now (0 when it does not exist), from the watch on the
    children (read when kopf's indices are not there)."""
    observed = runtime.children_of(cluster["metadata"]["uid"])
    if observed is not None:
        seen = observed.get(("StatefulSet", name))
        return int(seen.workload["desired"]) if seen and seen.workload else 0
    current = await k8s.get_object(
        runtime.client,
        k8s.resource_class("apps/v1", "StatefulSet"),
        name,
        cluster["metadata"]["namespace"],
    )
    return int((current or {}).get("spec", {}).get("replicas") or 0)


def draining_since(cluster: Mapping[str, Any]) -> str | None:
    """When the current drain began (the Progressing/Draining condition's transition)."""
    cond = find_condition(cluster.get("status"), "Progressing") or {}
    return cond.get("lastTransitionTime") if cond.get("reason") == "Draining" else None


async def hold_leaving_members(
    runtime: Runtime, cluster: Mapping[str, Any], children: list[dict[str, Any]]
) -> list[str]:
    """Scaling down drains first: the rendered peers file already leaves the last members
    out (they see it and hand their data over), but the StatefulSet keeps them until each
    reports it is drained, or ``drain_timeout`` passed. Returns the members still draining
    (and then raises the rendered StatefulSet's replicas back to keep them)."""
    client, options = runtime.client, runtime.options
    sts = next(obj for obj in children if obj["kind"] == "StatefulSet")
    desired = int(sts["spec"]["replicas"])
    kept = await statefulset_replicas(runtime, cluster, sts["metadata"]["name"])
    if kept <= desired or options.drain_timeout <= 0:
        return []
    ordinals = list(range(desired, kept))
    credentials = await k8s.member_credentials(runtime.secret_data, cluster)
    views = await k8s.member_views(cluster, ordinals, credentials)
    name = sts["metadata"]["name"]
    pending = [f"{name}-{i}" for i, view in zip(ordinals, views) if not k8s.drained(view)]
    since = draining_since(cluster)
    if not pending:
        await k8s.post_event(
            client,
            cluster,
            "Drained",
            f"{name}-{desired}..{name}-{kept - 1} handed "
            f"their data over; scaling the StatefulSet down to {desired}",
        )
        return []
    if since is not None and common.seconds_since(since) > options.drain_timeout:
        await k8s.post_event(
            client,
            cluster,
            "DrainTimeout",
            f"{', '.join(pending)} did not report drained within "
            f"{options.drain_timeout:g}s; removing them anyway (their data "
            "has other replicas; anti-entropy restores the replication factor)",
            "Warning",
        )
        return []
    if since is None:
        await k8s.post_event(
            client,
            cluster,
            "Draining",
            f"{', '.join(pending)} left the peers file; they hand their data over "
            f"before the StatefulSet scales down to {desired}",
        )
    sts["spec"]["replicas"] = kept
    return pending


async def report_scaling(
    client: AsyncClient, cluster: Mapping[str, Any], changes: k8s.Changes
) -> None:
    for obj in changes.applied:
        if obj["kind"] != "StatefulSet":
            continue
        before = changes.previous.get(k8s.child_key(obj))
        if before is None or before.workload is None:
            return
        old = before.workload["desired"]
        new = workload_summary(obj)["desired"]
        if old != new:
            await k8s.post_event(
                client,
                cluster,
                "Scaling",
                f"membership {old} -> {new}: peers file rewritten, "
                f"existing members keep running and rebalance",
            )


async def run_requested(runtime: Runtime, namespace: str, name: str, apply: bool) -> None:
    """A requested reconcile (a pipeline's change, a child's event, a Secret's change)."""
    await reconcile(runtime, {"metadata": {"namespace": namespace, "name": name}}, apply=apply)


def request_pipelines(runtime: Runtime, namespace: str, refs: Iterable[str | None]) -> None:
    """The pipelines ``refs`` may have gained or lost this cluster as a consumer: each
    reconciles (its ``status.consumers`` and token set derived from its sources then), later
    and coalesced; this cluster's handler does not wait for it."""
    for ref in sorted({r for r in refs if r}):
        runtime.request(PIPELINE, namespace, ref)


def register(registry: kopf.OperatorRegistry, options: Options) -> None:
    resource = (GROUP, VERSION, KVCLUSTER_PLURAL)
    common.register_objects_index(registry, KVCLUSTER, KVCLUSTER_PLURAL)

    @kopf.on.resume(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    @kopf.on.create(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    @kopf.on.update(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    async def reconcile_handler(body: kopf.Body, old: Any, memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        await reconcile(runtime, body)
        ref = pipeline_ref(common.plain(body))
        if old is None:  # created, or the operator (re)started: the pipeline counts it now
            request_pipelines(runtime, body["metadata"]["namespace"], [ref])
            return
        before = pipeline_ref({"spec": dict(old.get("spec") or {})})
        if before != ref:  # an update that moved it: both pipelines' consumers changed
            request_pipelines(runtime, body["metadata"]["namespace"], [ref, before])

    @kopf.timer(
        *resource,
        id="resync",
        interval=options.resync_interval,
        initial_delay=options.resync_interval,
        registry=registry,
    )
    async def resync(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        await common.unless_stopped(kwargs["stopped"], reconcile(memo.runtime, body))

    @kopf.on.event(*resource, id="deleted", registry=registry)
    async def deleted(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if type != "DELETED":
            return
        runtime: Runtime = memo.runtime
        meta = body["metadata"]
        runtime.forget(KVCLUSTER, meta["namespace"], meta["name"], meta.get("uid"))
        request_pipelines(runtime, meta["namespace"], [pipeline_ref(common.plain(body))])
