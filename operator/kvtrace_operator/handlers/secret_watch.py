"""The Secret watch: a change of a Secret that a pipeline (or its consumers' pods) references
asks for a reconcile of that pipeline and its KVClusters at once, not on the resync timer;
a change of a KVCluster's own token Secret asks for its pipeline (the collector's token set)
and that cluster. Two indices find them: (namespace, Secret) -> pipelines referencing it, and
(namespace, a KVCluster's token Secret) -> (pipeline, cluster). A third keeps every Secret's
resourceVersion and key names (never its data) for the reconciles' Secret checks. Requests are coalesced
(handlers/runtime.py): a burst of Secret events makes one reconcile per object.

What a reconcile does with Secrets is handlers/secret_gate.py. Imports no handler module but
the shared ones (common, consumers, runtime)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kvtrace.shared.api import (
    GROUP,
    KVCLUSTER,
    KVCLUSTER_PLURAL,
    PIPELINE,
    PIPELINE_PLURAL,
    VERSION,
)
from kvtrace_operator.handlers import common, consumers
from kvtrace_operator.handlers.runtime import SECRETS_INDEX, Options, Runtime
from kvtrace_operator.k8s.secrets import found
from kvtrace_operator.render import consumer_tokens, pipeline_ref
from kvtrace_operator.render.secret_refs import Found, pipeline_secret_names

INDEX = "pipelines_by_secret"
CLIENT_INDEX = "pipelines_by_client_token"
log = logging.getLogger("kvtrace_operator")


def using(index: Mapping[Any, Any] | None, namespace: str, secret: str) -> list[Any]:
    return sorted(set((index or {}).get((namespace, secret), ())))


def affected(
    indices: Mapping[str, Any], namespace: str, secret: str
) -> tuple[list[str], list[str]]:
    """(pipelines, KVClusters) to reconcile when ``secret`` changes: the pipelines referencing
    it and their clusters, and the pipeline and the cluster whose own token it is."""
    pipelines = set(using(indices.get(INDEX), namespace, secret))
    clusters = {
        name
        for pipeline in pipelines
        for name in consumers.cluster_names(consumers.referencing(indices, namespace, pipeline))
    }
    for pipeline, cluster in using(indices.get(CLIENT_INDEX), namespace, secret):
        pipelines.add(pipeline)
        clusters.add(cluster)
    return sorted(pipelines), sorted(clusters)


def register(registry: kopf.OperatorRegistry, options: Options) -> None:
    @kopf.index(GROUP, VERSION, PIPELINE_PLURAL, id=INDEX, registry=registry)
    async def pipelines_by_secret(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], str] | None:
        secrets = pipeline_secret_names(common.plain(body))
        return {(namespace or "", secret): name for secret in sorted(secrets)} or None

    @kopf.index(GROUP, VERSION, KVCLUSTER_PLURAL, id=CLIENT_INDEX, registry=registry)
    async def pipelines_by_client_token(
        namespace: str | None, name: str, spec: kopf.Spec, **_: Any
    ) -> dict[tuple[str, str], tuple[str, str]] | None:
        """A KVCluster's own token Secret → (the pipeline it references, the cluster): its
        token is in that pipeline's token set."""
        ref = pipeline_ref({"spec": dict(spec)})
        return (
            {(namespace or "", consumer_tokens.client_token_secret(name)): (ref, name)}
            if ref
            else None
        )

    @kopf.index("", "v1", "secrets", id=SECRETS_INDEX, registry=registry)
    async def secret_versions(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], Found]:
        """Every Secret's resourceVersion and key names (never its data): a reconcile's
        Secret checks read them here instead of from the API server."""
        return {(namespace or "", name): found(body)}

    def kept(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> bool:
        runtime: Runtime | None = getattr(memo, "runtime", None)
        return runtime is not None and runtime.secret_data.holds(namespace or "", name)

    @kopf.on.event("", "v1", "secrets", id="secret-data", when=kept, registry=registry)
    async def secret_data_event(
        type: str | None, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
    ) -> None:
        """A deleted Secret whose data the operator kept (Runtime.secret_data): dropped."""
        if type == "DELETED":
            memo.runtime.secret_data.forget(namespace or "", name)

    def referenced(namespace: str | None, name: str, **kwargs: Any) -> bool:
        """Only Secrets a pipeline or a consumer uses reach the handler (kopf passes the
        indices here too)."""
        return any(affected(kwargs, namespace or "", name))

    @kopf.on.event("", "v1", "secrets", id="referenced-secret", when=referenced, registry=registry)
    async def secret_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if type is None:  # the initial listing: resuming reconciles every resource anyway
            return
        runtime: Runtime = memo.runtime
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        pipelines, clusters = affected(runtime.indices, namespace, name)
        log.info(
            "Secret %s/%s %s: reconciling TracingPipeline %s and KVCluster %s",
            namespace,
            name,
            type.lower(),
            ", ".join(pipelines) or "-",
            ", ".join(clusters) or "-",
        )
        for pipeline in pipelines:
            runtime.request(PIPELINE, namespace, pipeline)
        for cluster in clusters:  # applied only if a pod template's Secret versions changed
            runtime.request(KVCLUSTER, namespace, cluster, apply=False)
