"""The operator under the chart's RBAC minus one permission (docs/security.md): it keeps running, sets
``Authorized=False`` (reason Forbidden, naming the verb and the resource) with an event, applies
nothing half-way, and heals once the permission is back. The operator runs exactly as the
chart's Deployment runs it, with a token of the chart's ServiceAccount (tests/chart/chartlib.py),
plus a short resync interval so the heal does not wait a minute."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))

from chartlib import ChartOperator

pytestmark = pytest.mark.controlplane

TIMEOUT = 90.0


class FastResyncOperator(ChartOperator):  # type: ignore[misc]
    def args(self) -> list[str]:
        return [*super().args(), "--resync-interval", "3", "--retry-backoff", "1"]


@pytest.fixture
def chart(
    local_cluster: Any, namespace: str, tmp_path: Path, crds: Any, request: pytest.FixtureRequest
) -> Iterator[FastResyncOperator]:
    # The CRDs come from the crds fixture (crds/), not from the chart a second time.
    op = FastResyncOperator(
        local_cluster, namespace, tmp_path, scope="namespace", values=("--skip-crds",)
    )
    try:
        op.install()
        yield op
    finally:
        op.delete_custom_resources()
        op.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            sys.stderr.write(f"\n--- operator log ({op.log_path}) ---\n{op.log()[-20000:]}\n")
        op.uninstall()


def role(kube: Any, chart: ChartOperator) -> dict[str, Any]:
    name = next(obj["metadata"]["name"] for obj in chart.manifest() if obj["kind"] == "Role")
    obj = kube.get("role", name)
    assert obj is not None
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": kube.namespace},
        "rules": obj["rules"],
    }


def without(rbac_role: dict[str, Any], group: str, resource: str, verb: str) -> dict[str, Any]:
    rules = []
    for rule in rbac_role["rules"]:
        if group in rule.get("apiGroups", ()) and resource in rule.get("resources", ()):
            assert verb in rule["verbs"], rule
            rule = {**rule, "verbs": [v for v in rule["verbs"] if v != verb]}
        rules.append(rule)
    return {**rbac_role, "rules": rules}


def replace(kube: Any, obj: dict[str, Any]) -> None:
    kube.run("replace", "-f", "-", input=json.dumps(obj))


def authorized(kube: Any, kind: str, name: str) -> dict[str, Any]:
    return kube.condition(kind, name, "Authorized") or {}


CASES = [
    # (API group, resource, verb, the denial as the condition words it)
    (
        "networking.k8s.io",
        "networkpolicies",
        "patch",
        "may not patch networkpolicies.networking.k8s.io",
    ),
    ("", "secrets", "get", "may not get secrets"),
]


@pytest.mark.parametrize(
    ("group", "resource", "verb", "words"), CASES, ids=[f"{c[2]}-{c[1]}" for c in CASES]
)
def test_a_removed_permission_is_a_condition_and_restoring_it_heals(
    chart: FastResyncOperator,
    kube_ns: Any,
    poll: Any,
    group: str,
    resource: str,
    verb: str,
    words: str,
) -> None:
    granted = role(kube_ns, chart)
    replace(kube_ns, without(granted, group, resource, verb))
    chart.start()
    kube_ns.apply(
        {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "TracingPipeline",
            "metadata": {"name": "traces"},
            "spec": {"security": {"auth": {"enabled": True}}},
        },
        {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "KVCluster",
            "metadata": {"name": "kv"},
            "spec": {
                "replicas": 1,
                "replicationFactor": 1,
                "tracing": {"pipelineRef": {"name": "traces"}},
            },
        },
    )
    poll(
        lambda: authorized(kube_ns, "tracingpipeline", "traces").get("reason") == "Forbidden",
        timeout=TIMEOUT,
        message=f"Authorized=False/Forbidden on the pipeline: {authorized(kube_ns, 'tracingpipeline', 'traces')}",
    )
    cond = authorized(kube_ns, "tracingpipeline", "traces")
    assert cond["status"] == "False"
    assert f"{words} in namespace {kube_ns.namespace}" in cond["message"], cond["message"]
    poll(
        lambda: any(
            e["reason"] == "Forbidden" and e["involvedObject"]["name"] == "traces"
            for e in kube_ns.list("events")
        ),
        timeout=30,
        message="a Forbidden event",
    )
    # Nothing applied half-way: the dry run of every child comes first (a missing patch on
    # NetworkPolicies stops the whole apply), a missing get on Secrets stops it before that.
    assert kube_ns.get("deployment", "traces-collector") is None
    assert chart.proc is not None and chart.proc.poll() is None, "the operator keeps running"

    replace(kube_ns, granted)
    for kind, name in (("tracingpipeline", "traces"), ("kvcluster", "kv")):
        poll(
            lambda k=kind, n=name: authorized(kube_ns, k, n).get("status") == "True",
            timeout=TIMEOUT,
            message=f"{kind}/{name} Authorized=True once the permission is back",
        )
    poll(
        lambda: (
            kube_ns.get("deployment", "traces-collector") is not None
            and kube_ns.list("networkpolicies", "app.kubernetes.io/instance=traces") != []
        ),
        timeout=TIMEOUT,
        message="the pipeline's children applied",
    )
    assert chart.proc.poll() is None
