"""The operator's default images (`--kvnode-image`, `--collector-image`, `--jaeger-image`)
on the real API server: the CRDs default no image, so the API server stores none and the
operator's flags decide what resources without an image run; one naming its own keeps it."""

from __future__ import annotations

from typing import Any

import pytest

from kvtrace.devstack.operator_fixtures import Kube, Operator

pytestmark = pytest.mark.controlplane

MIRROR = "mirror.example:5000/team"
TIMEOUT = 90.0


def containers(kube: Kube, kind: str, name: str) -> dict[str, str]:
    obj = kube.get(kind, name) or {}
    pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return {c["name"]: c["image"] for c in pod.get("containers") or []}


@pytest.mark.operator_args(
    f"--kvnode-image={MIRROR}/kvnode:0.1.0",
    f"--collector-image={MIRROR}/otelcol-kvtrace:0.161.0",
    f"--jaeger-image={MIRROR}/jaeger:2.13.0",
)
def test_resources_without_images_run_the_operators_and_stored_objects_stay_unset(
    operator: Operator, kube_ns: Kube, poll: Any
) -> None:
    kube_ns.apply(
        {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "TracingPipeline",
            "metadata": {"name": "traces"},
            "spec": {"sampling": {"mode": "head", "ratio": 1}},
        },
        {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "KVCluster",
            "metadata": {"name": "kv"},
            "spec": {"replicas": 1, "replicationFactor": 1},
        },
        {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "KVCluster",
            "metadata": {"name": "own"},
            "spec": {"replicas": 1, "replicationFactor": 1, "image": "own.example/kvnode:7"},
        },
    )
    wanted = {
        ("statefulset", "kv"): {"kvnode": f"{MIRROR}/kvnode:0.1.0"},
        ("statefulset", "own"): {"kvnode": "own.example/kvnode:7"},
        ("deployment", "traces-collector"): {"otelcol": f"{MIRROR}/otelcol-kvtrace:0.161.0"},
        ("deployment", "traces-jaeger"): {"jaeger": f"{MIRROR}/jaeger:2.13.0"},
    }
    poll(
        lambda: all(containers(kube_ns, *key) == value for key, value in wanted.items()),
        timeout=TIMEOUT,
        message=f"workload images {wanted}",
    )
    # The API server defaulted no image: the stored objects follow the operator's flags.
    assert "image" not in kube_ns.get("kvcluster", "kv")["spec"]
    stored = kube_ns.get("tracingpipeline", "traces")["spec"]
    assert "image" not in stored["collector"] and "image" not in stored["jaeger"]
