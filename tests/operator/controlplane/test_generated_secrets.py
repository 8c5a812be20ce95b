"""Generated token Secrets on the real API server: one left behind by an earlier resource of the
same name (deleted and created again before the garbage collector removed its dependents) is
made again for the new owner with a new token, never adopted; the owner's own is kept."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from lightkube import AsyncClient, KubeConfig

from kvtrace.devstack.operator_fixtures import Kube
from kvtrace.shared.api import MANAGED_BY, MANAGED_BY_LABEL
from kvtrace_operator.k8s.secrets import ensure_generated
from kvtrace_operator.render.security import GENERATED_ANNOTATION

pytestmark = pytest.mark.controlplane

NAME = "kv-kv-client-token"
EARLIER_UID = "00000000-0000-4000-8000-000000000001"


def generated_secret(namespace: str, owner_uid: str, token: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": NAME,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": {GENERATED_ANNOTATION: "token"},
            "ownerReferences": [
                {
                    "apiVersion": "kvtrace.dev/v1alpha1",
                    "kind": "KVCluster",
                    "name": "kv",
                    "uid": owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
    }
    if token is not None:
        body["data"] = {"token": base64.b64encode(token.encode()).decode()}
    return body


def token_and_owner(kube: Kube) -> tuple[str, str]:
    secret = kube.get("secret", NAME)
    assert secret is not None, "the generated Secret exists"
    token = base64.b64decode(secret["data"]["token"]).decode()
    return token, secret["metadata"]["ownerReferences"][0]["uid"]


def test_a_token_secret_of_an_earlier_owner_is_made_again_not_adopted(
    crds: list[str], local_cluster: Any, kube_ns: Kube
) -> None:
    kube_ns.apply(
        {"apiVersion": "kvtrace.dev/v1alpha1", "kind": "KVCluster", "metadata": {"name": "kv"}}
    )
    cluster = kube_ns.get("kvcluster", "kv")
    assert cluster is not None
    uid = cluster["metadata"]["uid"]
    # What the earlier KVCluster "kv" left: its owner is gone, the garbage collector will come.
    kube_ns.apply(generated_secret(kube_ns.namespace, EARLIER_UID, "earlier-token"))
    rendered = generated_secret(kube_ns.namespace, uid, None)

    async def ensure() -> bool:
        client = AsyncClient(KubeConfig.from_file(str(local_cluster.kubeconfig)), trust_env=False)
        try:
            _, created = await ensure_generated(client, rendered, kube_ns.namespace)
        finally:
            await client.close()
        return created

    assert asyncio.run(ensure()) is True, "made again for the new owner"
    token, owner = token_and_owner(kube_ns)
    assert owner == uid and token != "earlier-token" and len(token) >= 32
    # The new owner's own Secret is kept as it is, token and all.
    assert asyncio.run(ensure()) is False
    assert token_and_owner(kube_ns) == (token, uid)
