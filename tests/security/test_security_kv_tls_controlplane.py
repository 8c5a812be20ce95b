"""A KVCluster with the default security, run by the pod runner as real members: the operator's
managed CA signs the members' leaf (re-issued with each pod's address locally), the members
replicate over mutual TLS (a write at consistency ALL reaches all three), and a client needs
the cluster's bundle and generated token (401 without). About 1 minute."""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest

from kvtrace.shared.endpoints import resolve_url

pytestmark = pytest.mark.controlplane
TIMEOUT = 180


def test_default_cluster_replicates_over_mutual_tls_and_needs_the_token(
    operator: Any, kube_ns: Any, poll: Any, pod_runner: Any, endpoint_map: Any
) -> None:
    kube_ns.apply(
        {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "KVCluster",
            "metadata": {"name": "kv"},
            "spec": {"replicas": 3, "replicationFactor": 3},
        }
    )
    poll(
        lambda: kube_ns.condition_is("kvcluster", "kv", "Ready", "True"),
        timeout=TIMEOUT,
        message="Ready",
    )
    members = pod_runner("app.kubernetes.io/component=kvnode")
    members.wait_running(3, timeout=TIMEOUT)
    client = resolve_url(
        kube_ns.get("kvcluster", "kv")["status"]["endpoints"]["client"], endpoint_map.path
    )
    assert client.startswith("https://")
    bundle = base64.b64decode(kube_ns.get("secret", "kv-kv-tls-trust")["data"]["ca.crt"]).decode()
    verified = ssl.create_default_context(cadata=bundle)
    token = base64.b64decode(kube_ns.get("secret", "kv-kv-client-token")["data"]["token"]).decode()

    def put(headers: dict[str, str]) -> int | None:
        request = urllib.request.Request(
            f"{client}/v1/kv/tls-e2e?consistency=all", data=b"v", method="PUT", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=verified) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            return None

    poll(
        lambda: put({"Authorization": f"Bearer {token}"}) == 204,
        timeout=120,
        message=f"a PUT at ALL over TLS with the token; a member's log:\n{members.logs(next(iter(members.pods())))}",
    )
    assert put({}) == 401
    tls_status = kube_ns.get("kvcluster", "kv")["status"]["tls"]
    assert tls_status["mode"] == "managed"
    assert [c["secret"] for c in tls_status["certificates"]] == ["kv-kv-tls"]
