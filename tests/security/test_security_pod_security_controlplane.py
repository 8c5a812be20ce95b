"""Every pod the operator renders meets the Pod Security "restricted" profile, proven on the
real API server (docs/security.md): the test namespace enforces ``restricted`` (version ``latest``),
every rendered object of a representative spread of specs is applied server-side (no dry
run), a Pod made from each pod template is created directly (PodSecurity admission runs on
pods; for Deployments and StatefulSets the API server only warns), no PodSecurity warning
appears anywhere, and the controllers' own pods get admitted too.

A control case proves the namespace really enforces: a pod without a security context is
refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from kvtrace_operator.render import render_kvcluster, render_pipeline

pytestmark = pytest.mark.controlplane

PSA_LABELS = [
    f"pod-security.kubernetes.io/{mode}{suffix}"
    for mode in ("enforce", "warn")
    for suffix in ("", "-version")
]


def tp(namespace: str, name: str = "traces", **spec: Any) -> dict[str, Any]:
    # No uid: the children carry no owner reference (nothing to own them in this test).
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def kvc(namespace: str, name: str = "kv", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def objects_for(case: str, ns: str) -> list[dict[str, Any]]:
    """The rendered children of one representative setup."""
    if case == "kvcluster-traced":
        pipeline = tp(ns)
        cluster = kvc(
            ns,
            replicas=3,
            tracing={"pipelineRef": {"name": "traces"}},
            resources={"limits": {"memory": "256Mi"}},
        )
        return render_kvcluster(cluster, pipeline)
    if case == "kvcluster-untraced-labelled-clients":
        return render_kvcluster(
            kvc(ns, replicas=1, replicationFactor=1, networkPolicy={"clientAccess": "labelled"}),
            None,
        )
    if case == "pipeline-one-tier-memory":
        return render_pipeline(
            tp(ns, receivers={"zipkin": {"enabled": True}, "jaeger": {"enabled": True}})
        )
    if case == "pipeline-two-tier-badger":
        return render_pipeline(
            tp(
                ns,
                collector={"replicas": 2},
                jaeger={"storage": {"type": "badger", "size": "1Gi"}},
                exporters={
                    "otlp": [
                        {
                            "name": "vendor",
                            "endpoint": "https://otlp.example:4317",
                            "tls": {"caSecret": {"name": "vendor-ca", "key": "ca.crt"}},
                        }
                    ]
                },
            )
        )
    if case == "secured-pipeline-and-consumer":
        security = {
            "auth": {"enabled": True, "tokenSecretRef": {"name": "otlp-token", "key": "token"}},
            "tls": {"enabled": True, "secretName": "collector-tls"},
        }
        pipeline = tp(ns, "secure", collector={"replicas": 2}, security=security)
        cluster = kvc(
            ns,
            "vault",
            replicas=1,
            replicationFactor=1,
            tracing={"pipelineRef": {"name": "secure"}},
        )
        return render_pipeline(pipeline) + render_kvcluster(cluster, pipeline)
    if case == "managed-tls-two-tiers-and-consumer":
        # Every hop over TLS: leaf and trust-bundle Secret volumes in each collector tier,
        # Jaeger and the members.
        pipeline = tp(ns, "hops", collector={"replicas": 2}, security={"tls": {"enabled": True}})
        cluster = kvc(
            ns,
            "trusting",
            replicas=1,
            replicationFactor=1,
            tracing={"pipelineRef": {"name": "hops"}},
        )
        return render_pipeline(pipeline) + render_kvcluster(cluster, pipeline)
    if case == "query-proxy-oidc-tls":
        # spec.jaeger.query.auth oidc: the query-proxy sidecar in the Jaeger pod, with its
        # tokens, the issuer's CA and (TLS) Jaeger's serving certificate.
        oidc = {
            "issuer": "https://idp.example.com/realms/kvtrace",
            "audience": "jaeger-query",
            "caSecretRef": {"name": "idp-ca", "key": "ca.crt"},
        }
        return render_pipeline(
            tp(
                ns,
                "guarded",
                jaeger={"query": {"auth": {"mode": "oidc", "oidc": oidc}}},
                security={"tls": {"enabled": True}},
            )
        )
    raise AssertionError(case)


CASES = [
    "kvcluster-traced",
    "kvcluster-untraced-labelled-clients",
    "pipeline-one-tier-memory",
    "pipeline-two-tier-badger",
    "secured-pipeline-and-consumer",
    "managed-tls-two-tiers-and-consumer",
    "query-proxy-oidc-tls",
]


def restrict(kubectl: Any, namespace: str) -> None:
    kubectl(
        "label",
        "namespace",
        namespace,
        "--overwrite",
        *[
            f"{label}={'latest' if label.endswith('-version') else 'restricted'}"
            for label in PSA_LABELS
        ],
    )


def pod_from_template(workload: dict[str, Any]) -> dict[str, Any]:
    """A bare Pod with the workload's pod template (labels changed, so no controller adopts
    it); a StatefulSet's claim templates become the claim of member 0."""
    template = copy.deepcopy(workload["spec"]["template"])
    name = workload["metadata"]["name"]
    spec = template["spec"]
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        claim_name = claim["metadata"]["name"]
        spec["volumes"].append(
            {"name": claim_name, "persistentVolumeClaim": {"claimName": f"{claim_name}-{name}-0"}}
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"psa-{name}",
            "namespace": workload["metadata"]["namespace"],
            "labels": {"kvtrace.dev/psa-probe": name},
            "annotations": template["metadata"].get("annotations", {}),
        },
        "spec": spec,
    }


def no_warnings(proc: Any, what: str) -> None:
    assert proc.returncode == 0, f"{what}: refused:\n{proc.stderr}"
    assert "Warning" not in proc.stderr, f"{what}: the API server warned:\n{proc.stderr}"


def test_the_namespace_enforces_restricted(kubectl: Any, namespace: str) -> None:
    restrict(kubectl, namespace)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "loose", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    proc = kubectl("create", "-f", "-", input=yaml.safe_dump(pod), check=False)
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr, proc.stderr


@pytest.mark.parametrize("case", CASES)
def test_rendered_pods_are_admitted_under_restricted(
    kubectl: Any, namespace: str, poll: Any, case: str
) -> None:
    restrict(kubectl, namespace)
    objects = objects_for(case, namespace)
    workloads = [obj for obj in objects if obj["kind"] in ("Deployment", "StatefulSet")]
    assert workloads, f"{case}: nothing to check"

    # Every rendered object, server-side applied for real (ServiceAccounts before the pods).
    proc = kubectl(
        "apply",
        "--server-side",
        "--field-manager=kvtrace-test",
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
        check=False,
    )
    no_warnings(proc, f"{case}: server-side apply")

    for workload in workloads:
        template = workload["spec"]["template"]["spec"]
        # Only what calls the API mounts a token: the edge collector tier (k8s_attributes and
        # the k8snode detector, docs/security.md) and Prometheus (pod discovery).
        name = workload["metadata"]["name"]
        reads_the_api = name.endswith(("-collector", "-prometheus"))
        assert template.get("automountServiceAccountToken", True) is reads_the_api, name
        assert template["serviceAccountName"] in {
            obj["metadata"]["name"] for obj in objects if obj["kind"] == "ServiceAccount"
        }
        pod = pod_from_template(workload)
        proc = kubectl("create", "-f", "-", input=yaml.safe_dump(pod), check=False)
        no_warnings(proc, f"{case}: Pod from {workload['kind']}/{workload['metadata']['name']}")

    # The controllers' pods pass admission as well (a refused pod never appears).
    for workload in workloads:
        selector = ",".join(
            f"{k}={v}" for k, v in workload["spec"]["selector"]["matchLabels"].items()
        )

        def created(selector: str = selector) -> bool:
            return bool(
                kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "name").stdout.split()
            )

        poll(created, timeout=60, message=f"{case}: pods of {workload['metadata']['name']} created")
    events = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "violates PodSecurity" not in events
