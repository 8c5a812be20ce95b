"""What injection reads and writes in the API server (render/injection.py decides): the
workload's Secret (its token once, the copy of its pipeline's CA bundle kept current), the
workload owning a pod, the Secrets of a pipeline's instrumented workloads, the
MutatingWebhookConfiguration, and the pod-template annotation that rolls a workload.
Secret values are never logged. No kopf here."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.apps_v1 import ReplicaSet
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from kvtrace.shared.api import FIELD_MANAGER
from kvtrace_operator.k8s.client import get_object, resource_class, to_dict
from kvtrace_operator.k8s.secrets import TOKEN_BYTES, metadata_only
from kvtrace_operator.render import injection
from kvtrace_operator.render.consumer_tokens import TOKEN_KEY

WORKLOAD_API_VERSIONS = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "ReplicaSet": "apps/v1",
    "Job": "batch/v1",
}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _decoded(secret: Mapping[str, Any] | None, key: str) -> str | None:
    raw = ((secret or {}).get("data") or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode(errors="replace")


async def apply_configuration(client: AsyncClient, configuration: dict[str, Any]) -> None:
    """Server-side apply the MutatingWebhookConfiguration (cluster-scoped)."""
    await client.patch(
        MutatingWebhookConfiguration,
        configuration["metadata"]["name"],
        configuration,
        patch_type=PatchType.APPLY,
        field_manager=FIELD_MANAGER,
        force=True,
    )


async def workload_owner(client: AsyncClient, pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The owner reference (with uid) of the workload owning ``pod``: its controller, or the
    Deployment behind its ReplicaSet. None for a bare pod."""
    meta = pod.get("metadata") or {}
    owner = next((ref for ref in meta.get("ownerReferences") or () if ref.get("controller")), None)
    if owner is None:
        return None
    if owner["kind"] == "ReplicaSet":
        replica_set = await get_object(
            client, ReplicaSet, owner["name"], str(meta.get("namespace"))
        )
        above = next(
            (
                ref
                for ref in ((replica_set or {}).get("metadata") or {}).get("ownerReferences") or ()
                if ref.get("controller")
            ),
            None,
        )
        owner = above or owner
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["name"],
        "uid": owner["uid"],
    }


async def read_ca(client: AsyncClient, namespace: str, secret: str, key: str) -> str | None:
    """The CA bundle clients of a pipeline trust (None while its Secret or key is missing)."""
    return _decoded(await get_object(client, Secret, secret, namespace), key)


async def ensure_workload_secret(
    client: AsyncClient, obj: dict[str, Any], *, token: bool, ca: str | None
) -> dict[str, Any]:
    """Create the workload's Secret (a random ``token`` when ``token``; ``ca.crt`` = ``ca``)
    unless it exists; an existing one keeps its token, gains one if it has none, and gets the
    current ``ca``. Returns the Secret without data."""
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    existing = await get_object(client, Secret, name, namespace)
    wanted: dict[str, str] = {}
    if ca is not None:
        wanted[injection.CA_KEY] = _b64(ca)
    if existing is None:
        if token:
            wanted[TOKEN_KEY] = _b64(secrets.token_urlsafe(TOKEN_BYTES))
        try:
            body: Any = Secret.from_dict({**obj, "data": wanted})
            created = await client.create(body)
            return metadata_only({"apiVersion": "v1", "kind": "Secret", **to_dict(created)})
        except ApiError as exc:
            if exc.status.code != 409:  # another pod of the workload created it meanwhile
                raise
            existing = await get_object(client, Secret, name, namespace)
    data = (existing or {}).get("data") or {}
    if token and TOKEN_KEY not in data:
        wanted[TOKEN_KEY] = _b64(secrets.token_urlsafe(TOKEN_BYTES))
    changes = {key: value for key, value in wanted.items() if data.get(key) != value}
    if changes:
        existing = to_dict(
            await client.patch(
                Secret, name, {"data": changes}, namespace=namespace, patch_type=PatchType.MERGE
            )
        )
    return metadata_only({"apiVersion": "v1", "kind": "Secret", **(existing or {})})


async def refresh_ca(client: AsyncClient, secret: Mapping[str, Any], ca: str) -> bool:
    """Write ``ca`` into a workload Secret's ``ca.crt`` when it differs (True when written)."""
    meta = secret["metadata"]
    current = await get_object(client, Secret, meta["name"], meta["namespace"])
    if current is None or _decoded(current, injection.CA_KEY) == ca:
        return False
    await client.patch(
        Secret,
        meta["name"],
        {"data": {injection.CA_KEY: _b64(ca)}},
        namespace=meta["namespace"],
        patch_type=PatchType.MERGE,
    )
    return True


async def get_workload(
    client: AsyncClient, kind: str, namespace: str, name: str
) -> dict[str, Any] | None:
    if kind not in WORKLOAD_API_VERSIONS:
        return None
    return await get_object(
        client, resource_class(WORKLOAD_API_VERSIONS[kind], kind), name, namespace
    )


async def roll(client: AsyncClient, workload: Mapping[str, Any], checksum: str) -> None:
    """Set the pod template's restart checksum annotation: the workload rolls its pods."""
    meta = workload["metadata"]
    patch = {
        "spec": {"template": {"metadata": {"annotations": {injection.RESTART_CHECKSUM: checksum}}}}
    }
    await client.patch(
        resource_class(workload["apiVersion"], workload["kind"]),
        meta["name"],
        patch,
        namespace=meta["namespace"],
        patch_type=PatchType.MERGE,
    )
