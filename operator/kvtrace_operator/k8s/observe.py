"""Reading the children's real state (StatefulSet and Deployment rollouts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightkube import AsyncClient

from kvtrace_operator.k8s.apply import WORKLOAD_KINDS
from kvtrace_operator.k8s.client import get_object, resource_class
from kvtrace_operator.render.status import workload_summary


def workloads_of(objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """workload_summary() of every StatefulSet and Deployment among ``objects``."""
    return [workload_summary(obj) for obj in objects if obj.get("kind") in WORKLOAD_KINDS]


async def read_workloads(
    client: AsyncClient, namespace: str, rendered: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Read back the rendered workloads; a missing one is simply absent from the result."""
    found = []
    for obj in rendered:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        current = await get_object(
            client,
            resource_class(obj["apiVersion"], obj["kind"]),
            obj["metadata"]["name"],
            namespace,
        )
        if current is not None:
            current.setdefault("kind", obj["kind"])
            found.append(current)
    return workloads_of(found)
