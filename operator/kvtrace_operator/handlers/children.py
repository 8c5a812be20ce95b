"""Watching our children (by the managed-by label): a deleted child asks for its owner's
reconcile (it is re-created at once), and a workload's status change (pods becoming ready,
a rollout) asks for a status refresh. Requests are coalesced (handlers/runtime.py): a
rollout's many events make one reconcile of the owner, and this watch never waits for it.

The same watch keeps one kopf index per kind: owner UID -> k8s.Seen of each child (no data,
no spec). A reconcile reads its owner's children there (``Runtime.children_of``) instead of
listing them, and applies only those that drifted (k8s/apply.py); kopf drops an entry when the child
is deleted. Imports no other resource's handler module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from kvtrace.shared.api import API_VERSION, KVCLUSTER, MANAGED_BY, MANAGED_BY_LABEL, PIPELINE
from kvtrace_operator import k8s
from kvtrace_operator.handlers.runtime import CHILDREN_INDICES, Options, Runtime

WORKLOADS = ("StatefulSet", "Deployment")


def owner_ref(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference to the KVCluster or TracingPipeline controlling this child."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("apiVersion") == API_VERSION and ref.get("kind") in (KVCLUSTER, PIPELINE):
            return ref  # type: ignore[no-any-return]
    return None


def owner_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the KVCluster or TracingPipeline controlling this child."""
    ref = owner_ref(body)
    return None if ref is None else (str(ref["kind"]), str(ref["name"]))


def register(registry: kopf.OperatorRegistry, options: Options) -> None:
    for (api_version, kind), index in zip(k8s.PRUNABLE_KINDS, CHILDREN_INDICES, strict=True):
        group, _, version = api_version.rpartition("/")

        @kopf.index(
            group=group,
            version=version,
            kind=kind,
            id=index,
            registry=registry,
            labels={MANAGED_BY_LABEL: MANAGED_BY},
        )
        async def by_owner(body: kopf.Body, **_: Any) -> dict[str, k8s.Seen] | None:
            ref = owner_ref(body)
            return {str(ref["uid"]): k8s.seen(body)} if ref and ref.get("uid") else None

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
            if type == "DELETED":
                runtime.deletion_seen()
            owner_kind, owner_name = owner
            # repair a deletion; otherwise only refresh the status
            runtime.request(
                owner_kind, body["metadata"]["namespace"], owner_name, apply=type == "DELETED"
            )
