"""TracingPipeline handlers: one idempotent reconcile; a pipeline change (or deletion)
re-renders the KVClusters that reference it, which rolls their pods (checksum annotation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from lightkube import ApiError, AsyncClient

from kvtrace.shared.api import GROUP, PIPELINE_PLURAL, VERSION
from kvtrace_operator import k8s, tracing
from kvtrace_operator.handlers import (
    canary,
    certificates,
    common,
    kvcluster,
    secret_watch,
    self_tracing,
)
from kvtrace_operator.handlers.metrics import METRICS
from kvtrace_operator.render import SpecError, render_pipeline
from kvtrace_operator.render import status as render_status
from kvtrace_operator.render.secret_refs import with_conditions


def pipeline_status(pipeline: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    """render.status.pipeline_status() with the TraceDelivery outcome this process holds
    (handlers/canary.py), whichever way the reconcile ends."""
    delivery, record = canary.current(pipeline)
    return render_status.pipeline_status(pipeline, trace_delivery=delivery, delivery=record, **kwargs)


def with_token_condition(pipeline: Mapping[str, Any], status: dict[str, Any],
                         tokens: dict[str, Any] | None) -> dict[str, Any]:
    """``status`` with ``TokensReady`` (secret_watch.sync_tokens) when the pipeline has auth."""
    return status if tokens is None else with_conditions(status, pipeline.get("status"), [tokens])


async def reconcile(client: AsyncClient, pipeline: Mapping[str, Any], consumers: list[str],
                    *, apply: bool = True) -> None:
    """Render, apply (or only observe) and write the status, like kvcluster.reconcile()."""
    pipeline = common.plain(pipeline)
    meta = pipeline["metadata"]
    async with common.lock("TracingPipeline", meta["namespace"], meta["name"]):
        with METRICS.reconcile("TracingPipeline") as result, tracing.reconcile("TracingPipeline", pipeline, result):
            try:
                children = render_pipeline(pipeline, proxy_image=common.options.query_proxy_image)
            except SpecError as exc:
                result["outcome"] = "invalid_spec"
                await common.write_status(client, k8s.TracingPipeline, pipeline, pipeline_status(
                    pipeline, workloads=[], consumers=consumers, now=common.now(), spec_error=str(exc)))
                await common.report_spec_error(client, pipeline, str(exc))
                return
            try:
                children = await certificates.prepare(client, pipeline, children)  # TLS Secrets first
                gate = await secret_watch.check(client, pipeline, children)
                if gate.blocked:  # nothing applied: the pods could not start
                    result["outcome"] = "secret_not_found"
                    observed = await k8s.read_workloads(client, meta["namespace"], children)
                    tokens = await secret_watch.sync_tokens(client, pipeline, consumers)  # revoking still works
                    await common.write_status(client, k8s.TracingPipeline, pipeline, with_token_condition(
                        pipeline, gate.status(pipeline, pipeline_status(pipeline, workloads=observed,
                                                                        consumers=consumers, now=common.now())),
                        tokens))
                    await secret_watch.report_missing(client, pipeline, gate)
                    return
                workloads, _ = await common.converge(client, pipeline, gate.children, apply_all=apply)
                tokens = await secret_watch.sync_tokens(client, pipeline, consumers)  # revokes too
            except (k8s.Rejected, SpecError) as exc:  # SpecError: certManager without cert-manager
                result["outcome"] = "invalid_spec"
                await common.write_status(client, k8s.TracingPipeline, pipeline, pipeline_status(
                    pipeline, workloads=[], consumers=consumers, now=common.now(), spec_error=str(exc)))
                await common.report_spec_error(client, pipeline, str(exc))
                return
            except ApiError as exc:
                if not k8s.is_forbidden(exc):
                    raise
                result["outcome"] = "forbidden"
                await secret_watch.report_forbidden(client, k8s.TracingPipeline, pipeline, exc)
                return
            await common.write_status(client, k8s.TracingPipeline, pipeline, with_token_condition(
                pipeline, gate.status(pipeline, pipeline_status(
                    pipeline, workloads=workloads, consumers=consumers, now=common.now())), tokens))
    await self_tracing.follow(client, pipeline)


async def reconcile_named(client: AsyncClient, namespace: str, name: str, consumers: list[str],
                          *, apply: bool = True) -> None:
    pipeline = await k8s.get_object(client, k8s.TracingPipeline, name, namespace)
    if pipeline is None or pipeline["metadata"].get("deletionTimestamp"):
        return
    await reconcile(client, pipeline, consumers, apply=apply)


async def rerender_consumers(client: AsyncClient, namespace: str, names: list[str]) -> None:
    """Re-render every KVCluster using the pipeline (its pods roll if their env changed)."""
    for name in names:
        await kvcluster.reconcile_named(client, namespace, name)


def register(registry: kopf.OperatorRegistry, options: common.Options) -> None:
    resource = (GROUP, VERSION, PIPELINE_PLURAL)

    def consumers_of(body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> list[str]:
        meta = body["metadata"]
        return kvcluster.consumers(kwargs.get(kvcluster.INDEX), meta["namespace"], meta["name"])

    @kopf.on.resume(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    async def resumed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        await reconcile(memo.client, body, consumers_of(body, kwargs))

    @kopf.on.create(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    @kopf.on.update(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    async def changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        names = consumers_of(body, kwargs)
        await reconcile(memo.client, body, names)
        await rerender_consumers(memo.client, body["metadata"]["namespace"], names)

    @kopf.timer(*resource, id="resync", interval=options.resync_interval,
                initial_delay=options.resync_interval, registry=registry)
    async def resync(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        await reconcile(memo.client, body, consumers_of(body, kwargs))

    if options.canary_interval > 0:
        @kopf.timer(*resource, id="canary", interval=options.canary_interval,
                    initial_delay=min(options.canary_interval, 5.0), registry=registry)
        async def trace_delivery(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
            """The TraceDelivery canary, then a status refresh that carries its outcome."""
            if await canary.probe(memo.client, body):
                await reconcile_named(memo.client, body["metadata"]["namespace"], body["metadata"]["name"],
                                      consumers_of(body, kwargs), apply=False)

    @kopf.on.event(*resource, id="deleted", registry=registry)
    async def deleted(type: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        if type == "DELETED":
            canary.forget(body)
            # The clusters keep running, untraced, with TracingConfigured=False/PipelineNotFound.
            await rerender_consumers(memo.client, body["metadata"]["namespace"],
                                     consumers_of(body, kwargs))
