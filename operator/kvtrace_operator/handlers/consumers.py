"""Who consumes a TracingPipeline, derived from kopf's live indices at the moment a reconcile
needs it (never accumulated, never handed over from an older event): each source of
consumers is a kopf index mapping (namespace, pipeline) to the (kind, name) of the objects
referencing it. KVClusters are one source (their ``spec.tracing.pipelineRef``); the workloads
injected with the pipeline are another (their Secret, labelled with the pipeline by the
injection webhook: render/injection.py; kind ``Workload``, name ``NAMESPACE/KIND/NAME``, which
may be in another namespace than the pipeline). A new source registers its index and adds
its id to ``SOURCES`` (and its token Secret to render.consumer_tokens.CLIENT_TOKEN_SECRETS). The pipeline's own
declared ``spec.security.auth.consumers`` come from its spec (render.consumer_tokens).

Imports no other handler module."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from kvtrace.shared.api import GROUP, KVCLUSTER, KVCLUSTER_PLURAL, VERSION
from kvtrace_operator.render import injection, pipeline_ref
from kvtrace_operator.render.consumer_tokens import WORKLOAD

CLUSTERS_INDEX = "clusters_by_pipeline"
WORKLOADS_INDEX = "workloads_by_pipeline"
SOURCES: tuple[str, ...] = (CLUSTERS_INDEX, WORKLOADS_INDEX)

Referencing = tuple[str, str]  # (kind, name) of an object referencing a pipeline


def index_key(namespace: str, pipeline: str) -> tuple[str, str]:
    return namespace, pipeline


def referencing(indices: Mapping[str, Any], namespace: str, pipeline: str) -> list[Referencing]:
    """(kind, name) of every object in ``namespace`` referencing ``pipeline`` now, sorted."""
    found: set[Referencing] = set()
    for source in SOURCES:
        index: Mapping[Any, Iterable[Referencing]] = indices.get(source) or {}
        found.update(tuple(entry) for entry in index.get(index_key(namespace, pipeline), ()))  # type: ignore[misc]
    return sorted(found)


def workload_names(consumers: Iterable[Referencing]) -> list[str]:
    """The injected workloads among ``consumers`` (``NAMESPACE/KIND/NAME``, what
    ``status.instrumentedWorkloads`` lists)."""
    return sorted({name for kind, name in consumers if kind == WORKLOAD})


def cluster_names(consumers: Iterable[Referencing]) -> list[str]:
    """The KVClusters among ``consumers`` (what ``status.consumers`` lists)."""
    return sorted({name for kind, name in consumers if kind == KVCLUSTER})


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.index(GROUP, VERSION, KVCLUSTER_PLURAL, id=CLUSTERS_INDEX, registry=registry)
    async def clusters_by_pipeline(
        namespace: str | None, name: str, spec: kopf.Spec, **_: Any
    ) -> dict[tuple[str, str], Referencing] | None:
        ref = pipeline_ref({"spec": dict(spec)})
        return {index_key(namespace or "", ref): (KVCLUSTER, name)} if ref else None

    @kopf.index(
        "",
        "v1",
        "secrets",
        id=WORKLOADS_INDEX,
        labels={injection.PIPELINE_LABEL: kopf.PRESENT},
        registry=registry,
    )
    async def workloads_by_pipeline(
        namespace: str | None, meta: kopf.Meta, **_: Any
    ) -> dict[tuple[str, str], Referencing] | None:
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        pipeline_namespace = labels.get(injection.PIPELINE_NAMESPACE_LABEL)
        workload = annotations.get(injection.WORKLOAD_ANNOTATION)
        if not pipeline_namespace or not workload:
            return None
        return {
            index_key(pipeline_namespace, labels[injection.PIPELINE_LABEL]): (
                WORKLOAD,
                f"{namespace}/{workload}",
            )
        }
