"""The lightkube client, our custom resource types, reading objects and writing status."""

from __future__ import annotations

from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from kvtrace.shared import api

KVCluster = create_namespaced_resource(api.GROUP, api.VERSION, api.KVCLUSTER, api.KVCLUSTER_PLURAL)
TracingPipeline = create_namespaced_resource(
    api.GROUP, api.VERSION, api.PIPELINE, api.PIPELINE_PLURAL
)


def make_client(timeout: float = 30.0) -> AsyncClient:
    """A client for the in-cluster service account, else ``$KUBECONFIG``/``~/.kube/config``."""
    return AsyncClient(
        config=KubeConfig.from_env(),
        field_manager=api.FIELD_MANAGER,
        timeout=httpx2.Timeout(timeout),
    )


def resource_class(api_version: str, kind: str) -> Any:
    """The lightkube resource class of ``apiVersion``/``kind`` (ours included)."""
    return resource_registry.load(api_version, kind)


def to_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


async def get_object(
    client: AsyncClient, res: Any, name: str, namespace: str
) -> dict[str, Any] | None:
    """The object as a plain dict, or None when it does not exist."""
    try:
        return to_dict(await client.get(res, name, namespace=namespace))
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


async def patch_status(
    client: AsyncClient, res: Any, name: str, namespace: str, status: dict[str, Any]
) -> None:
    """Merge-patch the ``status`` subresource (lists such as ``conditions`` are replaced
    whole). A resource deleted meanwhile is not an error."""
    try:
        await client.patch(
            res.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
        )
    except ApiError as exc:
        if exc.status.code != 404:
            raise
