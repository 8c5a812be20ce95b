"""TracingPipeline handlers: one idempotent reconcile (resume, create, update, the drift
timer, requests); a pipeline change (or deletion) asks for a reconcile of the KVClusters that
reference it, which rolls their pods (checksum annotation). Every reconcile re-reads the
pipeline under its lock and derives its consumers at that moment (handlers/consumers.py):
``status.consumers`` and the collector's token set follow the live consumers, however many
requests came before. Imports no other resource's handler module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from lightkube import ApiError

from kvtrace.shared.api import GROUP, KVCLUSTER, PIPELINE, PIPELINE_PLURAL, VERSION
from kvtrace_operator import k8s, tracing
from kvtrace_operator.handlers import (
    canary,
    certificates,
    common,
    consumers,
    instrumented,
    secret_gate,
    self_tracing,
)
from kvtrace_operator.handlers.metrics import METRICS
from kvtrace_operator.handlers.runtime import Options, Runtime
from kvtrace_operator.render import SpecError, render_pipeline
from kvtrace_operator.render import status as render_status
from kvtrace_operator.render.secret_refs import with_conditions


def pipeline_status(runtime: Runtime, pipeline: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    """render.status.pipeline_status() with the TraceDelivery outcome this process holds
    (handlers/canary.py), whichever way the reconcile ends."""
    delivery, record = canary.current(runtime, pipeline)
    return render_status.pipeline_status(
        pipeline, trace_delivery=delivery, delivery=record, **kwargs
    )


def with_token_condition(
    pipeline: Mapping[str, Any], status: dict[str, Any], tokens: dict[str, Any] | None
) -> dict[str, Any]:
    """``status`` with ``TokensReady`` (secret_gate.sync_tokens) when the pipeline has auth."""
    return status if tokens is None else with_conditions(status, pipeline.get("status"), [tokens])


async def sync_tokens(
    runtime: Runtime, pipeline: Mapping[str, Any], referencing: list[consumers.Referencing]
) -> dict[str, Any] | None:
    """secret_gate.sync_tokens() for the consumers derived at the start of the reconcile;
    when they changed meanwhile, TokensReady is False (ConsumersChanged) and one more
    reconcile is requested: True only while the token file holds exactly the live ones."""
    tokens = await secret_gate.sync_tokens(runtime.secret_data, pipeline, referencing)
    meta = pipeline["metadata"]
    if consumers.referencing(runtime.indices, meta["namespace"], meta["name"]) == referencing:
        return tokens
    runtime.request(PIPELINE, meta["namespace"], meta["name"])
    if tokens is None:
        return None
    return render_status.condition(
        secret_gate.TOKENS_READY,
        False,
        "ConsumersChanged",
        "the consumers changed while the token set was written; writing it again",
        generation=meta.get("generation"),
        now=common.now(),
    )


async def reconcile(runtime: Runtime, body: Mapping[str, Any], *, apply: bool = True) -> None:
    """Re-read, render, apply (or only observe) and write the status, like kvcluster.reconcile()."""
    meta = body["metadata"]
    client = runtime.client
    async with runtime.lock(PIPELINE, meta["namespace"], meta["name"]):
        pipeline = await common.fresh(runtime, PIPELINE, body)
        if pipeline is None:
            return
        referencing = consumers.referencing(runtime.indices, meta["namespace"], meta["name"])
        with (
            k8s.request_priority(k8s.FIRST),  # few, and every consumer's tokens wait on it
            METRICS.reconcile("TracingPipeline") as result,
            tracing.reconcile("TracingPipeline", pipeline, result),
        ):

            async def refuse(exc: Exception) -> None:
                """An invalid spec: conditions and an event, nothing applied."""
                result["outcome"] = "invalid_spec"
                status = pipeline_status(
                    runtime,
                    pipeline,
                    workloads=[],
                    consumers=referencing,
                    now=common.now(),
                    spec_error=str(exc),
                )
                await common.write_status(client, k8s.TracingPipeline, pipeline, status)
                await common.report_spec_error(client, pipeline, str(exc))

            try:
                children = render_pipeline(pipeline, images=runtime.options.images)
            except SpecError as exc:
                await refuse(exc)
                return
            try:
                prepared = await certificates.prepare(runtime, pipeline, children)  # TLS first
                children, written = prepared.children, prepared.written
                gate = await secret_gate.check(runtime, pipeline, children)
                if gate.blocked:  # nothing applied: the pods could not start
                    result["outcome"] = "secret_not_found"
                    observed = await k8s.read_workloads(client, meta["namespace"], children)
                    tokens = await sync_tokens(
                        runtime, pipeline, referencing
                    )  # revoking still works
                    await common.write_status(
                        client,
                        k8s.TracingPipeline,
                        pipeline,
                        with_token_condition(
                            pipeline,
                            gate.status(
                                pipeline,
                                pipeline_status(
                                    runtime,
                                    pipeline,
                                    workloads=observed,
                                    consumers=referencing,
                                    now=common.now(),
                                ),
                            ),
                            tokens,
                        )
                        | {"tls": prepared.tls},
                    )
                    await secret_gate.report_missing(client, pipeline, gate)
                    return
                workloads, _ = await common.converge(
                    runtime,
                    pipeline,
                    gate.children,
                    apply_all=apply,
                    written=written | gate.written,
                )
                tokens = await sync_tokens(runtime, pipeline, referencing)  # revokes too
                await instrumented.sync(
                    client,
                    pipeline,
                    consumers.workload_names(referencing),
                    runtime.options.images,
                )
            except (k8s.Rejected, SpecError) as exc:  # SpecError: certManager without cert-manager
                await refuse(exc)
                return
            except ApiError as exc:
                if not k8s.is_forbidden(exc):
                    raise
                result["outcome"] = "forbidden"
                await secret_gate.report_forbidden(client, k8s.TracingPipeline, pipeline, exc)
                return
            await common.write_status(
                client,
                k8s.TracingPipeline,
                pipeline,
                with_token_condition(
                    pipeline,
                    gate.status(
                        pipeline,
                        {
                            **pipeline_status(
                                runtime,
                                pipeline,
                                workloads=workloads,
                                consumers=referencing,
                                now=common.now(),
                            ),
                            "instrumentedWorkloads": consumers.workload_names(referencing),
                        },
                    ),
                    tokens,
                )
                | {"tls": prepared.tls},
            )
    await self_tracing.follow(client, pipeline)


async def run_requested(runtime: Runtime, namespace: str, name: str, apply: bool) -> None:
    """A requested reconcile (a consumer came or went, a child's event, a Secret's change)."""
    await reconcile(runtime, {"metadata": {"namespace": namespace, "name": name}}, apply=apply)


def request_consumers(runtime: Runtime, body: Mapping[str, Any]) -> None:
    """Ask every KVCluster using the pipeline to re-render (its pods roll if their env changed)."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    for cluster in consumers.cluster_names(consumers.referencing(runtime.indices, namespace, name)):
        runtime.request(KVCLUSTER, namespace, cluster)


def register(registry: kopf.OperatorRegistry, options: Options) -> None:
    resource = (GROUP, VERSION, PIPELINE_PLURAL)
    common.register_objects_index(registry, PIPELINE, PIPELINE_PLURAL)

    @kopf.on.resume(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    async def resumed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await reconcile(memo.runtime, body)

    @kopf.on.create(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    @kopf.on.update(*resource, id="reconcile", backoff=options.retry_backoff, registry=registry)
    async def changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await reconcile(memo.runtime, body)
        request_consumers(memo.runtime, body)

    @kopf.timer(
        *resource,
        id="resync",
        interval=options.resync_interval,
        initial_delay=options.resync_interval,
        registry=registry,
    )
    async def resync(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        await common.unless_stopped(kwargs["stopped"], reconcile(memo.runtime, body))

    if options.canary_interval > 0:

        @kopf.timer(
            *resource,
            id="canary",
            interval=options.canary_interval,
            initial_delay=min(options.canary_interval, 5.0),
            registry=registry,
        )
        async def trace_delivery(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
            """The TraceDelivery canary, then a status refresh that carries its outcome."""

            async def probe_and_refresh() -> None:
                if await canary.probe(memo.runtime, body):
                    await reconcile(memo.runtime, body, apply=False)

            await common.unless_stopped(kwargs["stopped"], probe_and_refresh())

    @kopf.on.event(*resource, id="deleted", registry=registry)
    async def deleted(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if type == "DELETED":
            runtime: Runtime = memo.runtime
            meta = body["metadata"]
            runtime.forget(PIPELINE, meta["namespace"], meta["name"], meta.get("uid"))
            # The clusters keep running, untraced, with TracingConfigured=False/PipelineNotFound.
            request_consumers(runtime, body)
