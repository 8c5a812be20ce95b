"""The API server accepts every child the operator renders for the examples and for edge
specs (longest names, every option on and off), checked by a server-side dry run of each
render at once: what lets a reconcile dry-run only the workloads and claims
(render/dry_run.py) and still never write half of an invalid render. The children of other
kinds hold no free-form value of the spec (tests/operator/unit/test_render_dry_run.py), so
once accepted here they are accepted for every spec that passes render/validate.py."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace.devstack.operator_fixtures import Kube
from kvtrace_operator import rotation
from kvtrace_operator.k8s import certificates
from kvtrace_operator.render import render_kvcluster, render_pipeline, tls
from kvtrace_operator.render.certificates import KIND as CERTIFICATE
from kvtrace_operator.render.dry_run import needs_dry_run
from kvtrace_operator.render.validate import MAX_KVCLUSTER_NAME, MAX_PIPELINE_NAME

pytestmark = pytest.mark.controlplane

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
LONG_KV = "k" + "v" * (MAX_KVCLUSTER_NAME - 1)
LONG_TP = "t" + "p" * (MAX_PIPELINE_NAME - 1)


def resource(
    kind: str, name: str, namespace: str, uid: str, spec: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": spec,
    }


def examples(namespace: str) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(label, resource, its pipeline) for every KVCluster and TracingPipeline of examples/."""
    found: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    for folder in sorted(path for path in EXAMPLES.iterdir() if path.is_dir()):
        docs = [
            doc
            for path in sorted(folder.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") in ("KVCluster", "TracingPipeline")
        ]
        pipelines = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TracingPipeline"}
        for index, doc in enumerate(docs):
            doc["metadata"] |= {"namespace": namespace, "uid": f"uid-{folder.name}-{index}"}
        for doc in docs:
            ref = ((doc["spec"].get("tracing") or {}).get("pipelineRef") or {}).get("name")
            found.append((f"{folder.name}/{doc['metadata']['name']}", doc, pipelines.get(ref)))
    return found


def edge_specs(namespace: str) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """The longest names and every option that changes which objects are rendered."""
    full = resource(
        "TracingPipeline",
        LONG_TP,
        namespace,
        "uid-tp-full",
        {
            "collector": {"replicas": 3},
            "jaeger": {"storage": {"type": "badger"}, "query": {"auth": {"mode": "basic"}}},
            "metrics": {"enabled": True},
            "receivers": {"zipkin": {"enabled": True}, "jaeger": {"enabled": True}},
            "networkPolicy": {"queryAccess": "labelled"},
            "security": {"auth": {"consumers": [{"name": "c" * 63}]}},
        },
    )
    bare = resource(
        "TracingPipeline",
        "bare",
        namespace,
        "uid-tp-bare",
        {
            "jaeger": {"enabled": False},
            "exporters": {"debug": {"enabled": True}},
            "networkPolicy": {"enabled": False},
            "security": {"auth": {"enabled": False}, "tls": {"enabled": False}},
        },
    )
    kv_full = resource(
        "KVCluster",
        LONG_KV,
        namespace,
        "uid-kv-full",
        {
            "replicas": 9,
            "replicationFactor": 5,
            "networkPolicy": {"clientAccess": "labelled"},
            "security": {"auth": {"clients": [{"name": "a" * 63}]}},
            "tracing": {"pipelineRef": {"name": LONG_TP}},
        },
    )
    kv_bare = resource(
        "KVCluster",
        "one",
        namespace,
        "uid-kv-bare",
        {
            "replicas": 1,
            "replicationFactor": 1,
            "networkPolicy": {"enabled": False},
            "security": {"auth": {"enabled": False}, "tls": {"enabled": False}},
        },
    )
    return [
        ("pipeline, every option", full, None),
        ("pipeline, every option off", bare, None),
        ("cluster, longest names, every option", kv_full, full),
        (
            "cluster traced by the bare pipeline",
            {**kv_bare, "spec": {**kv_bare["spec"], "tracing": {"pipelineRef": {"name": "bare"}}}},
            bare,
        ),
        ("cluster, untraced, every option off", kv_bare, None),
    ]


def managed_tls(owner: dict[str, Any]) -> list[dict[str, Any]]:
    """The TLS Secrets of mode managed (CA, trust bundle, leaves), as the operator writes them."""
    spec = tls.owner_spec(owner)
    if spec.security.tls.active_mode != tls.MANAGED:
        return []
    now = datetime.datetime.now(datetime.UTC)
    state, _ = rotation.rotate(
        rotation.State(),
        certificates.leaf_specs(owner, spec),
        now,
        certificates.policy(spec),
        ca_name="test CA",
    )
    return certificates.managed_secrets(owner, spec, state, now)


def rendered(owner: dict[str, Any], pipeline: dict[str, Any] | None) -> list[dict[str, Any]]:
    children = (
        render_kvcluster(owner, pipeline)
        if owner["kind"] == "KVCluster"
        else render_pipeline(owner)
    )
    # without cert-manager's Certificates (no CRD here)
    return managed_tls(owner) + [obj for obj in children if obj["kind"] != CERTIFICATE]


def dry_run(kube: Kube, objects: list[dict[str, Any]]) -> Any:
    return kube.run(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager=kvtrace-operator",
        "-o",
        "name",
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
        check=False,
    )


def test_the_api_server_accepts_every_child_of_the_examples_and_edge_specs(
    kube_ns: Kube,
) -> None:
    cases = examples(kube_ns.namespace) + edge_specs(kube_ns.namespace)
    assert len(cases) >= 18, [label for label, _, _ in cases]
    unchecked_kinds: set[str] = set()
    for label, owner, pipeline in cases:
        objects = rendered(owner, pipeline)
        unchecked_kinds |= {obj["kind"] for obj in objects if not needs_dry_run(obj)}
        proc = dry_run(kube_ns, objects)
        assert proc.returncode == 0, f"{label}: {proc.stderr}"
        assert len(proc.stdout.split()) == len(objects), f"{label}: {proc.stdout}"
    # every kind the reconcile applies without a dry run was among them
    assert {
        "Secret",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
    } <= unchecked_kinds
    stored = kube_ns.run("get", "configmaps,services,secrets,statefulsets", "-o", "name").stdout
    assert "kvtrace" not in stored and LONG_KV not in stored, "a dry run stored something"
