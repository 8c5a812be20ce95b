"""Watching our children (by the managed-by label): a deleted child is re-created at once,
and a workload's status change (pods becoming ready, a rollout) refreshes its owner's status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from kvtrace.shared.api import API_VERSION, KVCLUSTER, MANAGED_BY, MANAGED_BY_LABEL, PIPELINE
from kvtrace_operator import k8s
from kvtrace_operator.handlers import common, kvcluster, pipeline

WORKLOADS = ("StatefulSet", "Deployment")


def owner_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the KVCluster or TracingPipeline controlling this child."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("apiVersion") == API_VERSION and ref.get("kind") in (KVCLUSTER, PIPELINE):
            return str(ref["kind"]), str(ref["name"])
    return None


def register(registry: kopf.OperatorRegistry, options: common.Options) -> None:
    for api_version, kind in k8s.PRUNABLE_KINDS:
        group, _, version = api_version.rpartition("/")

        @kopf.on.event(group=group, version=version, kind=kind, id=f"child-{kind.lower()}",
                       registry=registry,
                       labels={MANAGED_BY_LABEL: MANAGED_BY})
        async def child_event(type: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
            owner = owner_of(body)
            if owner is None or type not in ("DELETED", "MODIFIED", "ADDED"):
                return
            if type != "DELETED" and body.get("kind") not in WORKLOADS:
                return
            apply = type == "DELETED"  # repair a deletion; otherwise only refresh the status
            namespace, (kind, name) = body["metadata"]["namespace"], owner
            if kind == KVCLUSTER:
                await kvcluster.reconcile_named(memo.client, namespace, name, apply=apply)
            else:
                await pipeline.reconcile_named(
                    memo.client, namespace, name,
                    kvcluster.consumers(kwargs.get(kvcluster.INDEX), namespace, name), apply=apply)
