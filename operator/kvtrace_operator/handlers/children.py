"""Watching our children (by the managed-by label): a deleted child asks for its owner's
reconcile (it is re-created at once), and a workload's status change (pods becoming ready,
a rollout) asks for a status refresh. Requests are coalesced (handlers/runtime.py): a
rollout's many events make one reconcile of the owner, and this watch never waits for it.
Imports no other resource's handler module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from kvtrace.shared.api import API_VERSION, KVCLUSTER, MANAGED_BY, MANAGED_BY_LABEL, PIPELINE
from kvtrace_operator import k8s
from kvtrace_operator.handlers.runtime import Options, Runtime

WORKLOADS = ("StatefulSet", "Deployment")


def owner_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the KVCluster or TracingPipeline controlling this child."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("apiVersion") == API_VERSION and ref.get("kind") in (KVCLUSTER, PIPELINE):
            return str(ref["kind"]), str(ref["name"])
    return None


def register(registry: kopf.OperatorRegistry, options: Options) -> None:
    for api_version, kind in k8s.PRUNABLE_KINDS:
        group, _, version = api_version.rpartition("/")

        @kopf.on.event(
            group=group,
            version=version,
            kind=kind,
            id=f"child-{kind.lower()}",
            registry=registry,
            labels={MANAGED_BY_LABEL: MANAGED_BY},
        )
        async def child_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
            owner = owner_of(body)
            if owner is None or type not in ("DELETED", "MODIFIED", "ADDED"):
                return
            if type != "DELETED" and body.get("kind") not in WORKLOADS:
                return
            runtime: Runtime = memo.runtime
            owner_kind, owner_name = owner
            # repair a deletion; otherwise only refresh the status
            runtime.request(
                owner_kind, body["metadata"]["namespace"], owner_name, apply=type == "DELETED"
            )
