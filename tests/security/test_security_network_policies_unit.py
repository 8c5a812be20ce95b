"""The rendered NetworkPolicies against a table of who may reach what (docs/security.md).

A small pure evaluator implements the NetworkPolicy semantics we rely on (ingress only: a
pod selected by no policy accepts everything; a selected pod accepts a connection when some
rule of some policy selecting it matches both the port and the source). The pods' labels
come from the rendered pod templates themselves, so a label the policies expect but the
pods do not carry fails here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate
import pytest

from kvtrace_operator.render import (
    SpecError,
    render_kvcluster,
    render_pipeline,
    validate_kvcluster,
    validate_pipeline,
)

pytestmark = pytest.mark.unit

NS, OTHER_NS, OPERATOR_NS = "store", "elsewhere", "kvtrace-system"


# ---- the evaluator --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels; {} selects all."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(peer: dict[str, Any], policy_ns: str, source: Pod) -> bool:
    assert "ipBlock" not in peer, "the evaluator does not model ipBlock"
    if "namespaceSelector" in peer:
        namespace_ok = selects(
            peer["namespaceSelector"], {"kubernetes.io/metadata.name": source.namespace}
        )
    else:
        namespace_ok = source.namespace == policy_ns
    return namespace_ok and selects(peer.get("podSelector") or {}, source.labels)


def allowed(policies: list[dict[str, Any]], source: Pod, target: Pod, port: int) -> bool:
    applicable = [
        p
        for p in policies
        if p["metadata"]["namespace"] == target.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], target.labels)
    ]
    if not applicable:
        return True
    for policy in applicable:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(
                p.get("protocol", "TCP") == "TCP" and p["port"] == port for p in ports
            ):
                continue
            peers = rule.get("from")
            if not peers or any(
                peer_matches(peer, policy["metadata"]["namespace"], source) for peer in peers
            ):
                return True
    return False


def test_the_evaluator_itself() -> None:
    deny_all = {
        "metadata": {"namespace": NS},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    a, b = Pod(NS, {"app": "a"}), Pod(NS, {"app": "b"})
    assert allowed([], a, b, 80)
    assert not allowed([deny_all], a, b, 80)
    only_a = {
        "metadata": {"namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 80}]}
            ],
        },
    }
    assert (
        allowed([only_a], a, b, 80)
        and not allowed([only_a], a, b, 81)
        and not allowed([only_a], b, b, 80)
    )
    assert not allowed([only_a], Pod(OTHER_NS, {"app": "a"}), b, 80)
    assert allowed([only_a], b, a, 81)  # a is not selected
    assert selects({"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["1"]}]}, {})


# ---- the rendered setup ---------------------------------------------------------------------


def kvc(name: str, pipeline: str | None, **spec: Any) -> dict[str, Any]:
    if pipeline:
        spec["tracing"] = {"pipelineRef": {"name": pipeline}}
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": spec,
    }


def tp(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": spec,
    }


def template_labels(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    workload = next(
        o
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] == name
    )
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def setup(secure: bool, enabled: bool = True) -> tuple[list[dict[str, Any]], dict[str, Pod]]:
    """``secure``: two collector tiers, labelled KV clients and a labelled Jaeger query proxy;
    otherwise one tier and the defaults."""
    policy: dict[str, Any] = {"enabled": enabled}
    pipeline = tp(
        "traces",
        collector={"replicas": 2 if secure else 1},
        networkPolicy={**policy, **({"queryAccess": "labelled"} if secure else {})},
    )
    orders = kvc(
        "orders",
        "traces",
        networkPolicy={**policy, **({"clientAccess": "labelled"} if secure else {})},
    )
    billing = kvc("billing", None, networkPolicy=policy)  # same namespace, untraced
    objects = (
        render_pipeline(pipeline)
        + render_kvcluster(orders, pipeline)
        + render_kvcluster(billing, None)
    )
    pods = {
        "orders": Pod(NS, template_labels(objects, "orders")),
        "billing": Pod(NS, template_labels(objects, "billing")),
        "collector": Pod(NS, template_labels(objects, "traces-collector")),
        "jaeger": Pod(NS, template_labels(objects, "traces-jaeger")),
        "prometheus": Pod(NS, template_labels(objects, "traces-prometheus")),
        "app": Pod(NS, {"app": "web"}),
        "instrumented-app": Pod(NS, {"app": "web", "kvtrace.dev/telemetry-client": "traces"}),
        "kv-client": Pod(NS, {"app": "web", "kvtrace.dev/kv-client": "orders"}),
        "query-proxy": Pod(NS, {"app": "proxy", "kvtrace.dev/jaeger-query-client": "traces"}),
        "outsider": Pod(
            OTHER_NS, {"kvtrace.dev/telemetry-client": "traces", "kvtrace.dev/kv-client": "orders"}
        ),
        "operator": Pod(
            OPERATOR_NS,
            {
                "app.kubernetes.io/name": "kvtrace-operator",
                "app.kubernetes.io/part-of": "kvtrace",
                "app.kubernetes.io/component": "operator",
            },
        ),
        "kubelet-probe": Pod("(node)", {}),  # stands for any source outside the namespace
    }
    if secure:
        pods["sampling"] = Pod(NS, template_labels(objects, "traces-collector-sampling"))
    return [o for o in objects if o["kind"] == "NetworkPolicy"], pods


ALL = (
    "orders",
    "billing",
    "collector",
    "jaeger",
    "prometheus",
    "app",
    "instrumented-app",
    "kv-client",
    "query-proxy",
    "outsider",
    "operator",
    "kubelet-probe",
)
SAME_NS = (
    "orders",
    "billing",
    "collector",
    "jaeger",
    "prometheus",
    "app",
    "instrumented-app",
    "kv-client",
    "query-proxy",
)

# (target, port): the sources allowed; every other source of ALL must be refused.
DEFAULT_TABLE: dict[tuple[str, int], tuple[str, ...]] = {
    ("orders", 7070): ALL,  # clientAccess: all
    ("orders", 7071): ("orders",),  # peers: own members only
    ("billing", 7071): ("billing",),
    ("collector", 4317): ("orders", "instrumented-app"),  # consumers only
    ("collector", 4318): ("orders", "instrumented-app", "operator"),  # + the operator's canary
    ("collector", 13133): ALL,  # probes
    ("collector", 8889): ALL,  # Prometheus
    ("jaeger", 4317): ("collector",),  # only the exporting collector
    ("jaeger", 4318): ("collector",),
    ("jaeger", 16686): (*SAME_NS, "operator"),  # queryAccess: namespace; the canary
    ("jaeger", 16685): SAME_NS,
    ("jaeger", 13133): ALL,
    # OTLP writes from the connectors' tier, Monitor-tab queries, the namespace's readers.
    ("prometheus", 9090): (*SAME_NS, "operator"),
}
SECURE_TABLE: dict[tuple[str, int], tuple[str, ...]] = {
    # clientAccess: labelled; the namespace's Prometheus scrapes /metrics there.
    ("orders", 7070): ("orders", "kv-client", "operator", "prometheus"),
    ("orders", 7071): ("orders",),
    ("billing", 7070): ALL,
    ("collector", 4317): ("orders", "instrumented-app"),  # the load-balancing tier
    ("collector", 4318): ("orders", "instrumented-app", "operator"),
    ("collector", 13133): ALL,
    ("sampling", 4317): ("collector",),  # only from the load-balancing tier
    ("sampling", 13133): ALL,
    ("jaeger", 4317): ("sampling",),  # only the tier that exports
    ("jaeger", 16686): ("query-proxy", "operator"),  # queryAccess: labelled; the canary
    ("jaeger", 16685): ("query-proxy",),
    ("jaeger", 8888): ALL,
    ("prometheus", 9090): ("sampling", "jaeger", "query-proxy", "operator"),
}


@pytest.mark.parametrize("secure", [False, True], ids=["defaults", "two-tier-labelled"])
def test_who_may_reach_what(secure: bool) -> None:
    policies, pods = setup(secure)
    table = SECURE_TABLE if secure else DEFAULT_TABLE
    sources = ALL + (("sampling",) if secure else ())
    wrong = []
    for (target, port), allowed_sources in table.items():
        for source in sources:
            expected = source in allowed_sources or (allowed_sources is ALL)
            if allowed(policies, pods[source], pods[target], port) != expected:
                wrong.append(
                    f"{source} -> {target}:{port} should be {'allowed' if expected else 'refused'}"
                )
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("secure", [False, True])
def test_every_pod_is_covered_and_policies_are_valid(secure: bool) -> None:
    policies, pods = setup(secure)
    covered = ("orders", "billing", "collector", "jaeger", "prometheus")
    for name in (*covered, *(("sampling",) if secure else ())):
        assert any(
            p["metadata"]["namespace"] == pods[name].namespace
            and selects(p["spec"]["podSelector"], pods[name].labels)
            for p in policies
        ), name
    for policy in policies:
        kubernetes_validate.validate(policy, "1.37", strict=True)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    # An undeclared port of a covered pod is closed, even to the namespace.
    assert not allowed(policies, pods["app"], pods["collector"], 55679)


def test_disabled_renders_no_policies() -> None:
    policies, pods = setup(secure=True, enabled=False)
    assert policies == []
    assert allowed(policies, pods["outsider"], pods["jaeger"], 4317)


def test_only_traced_members_carry_the_telemetry_label() -> None:
    _, pods = setup(secure=False)
    assert pods["orders"].labels["kvtrace.dev/telemetry-client"] == "traces"
    assert "kvtrace.dev/telemetry-client" not in pods["billing"].labels


def test_bad_access_values_name_the_field() -> None:
    with pytest.raises(
        SpecError, match=r"spec\.networkPolicy\.clientAccess: expected one of all, labelled"
    ):
        validate_kvcluster(kvc("orders", None, networkPolicy={"clientAccess": "some"}))
    with pytest.raises(
        SpecError, match=r"spec\.networkPolicy\.queryAccess: expected one of namespace, labelled"
    ):
        validate_pipeline(tp("traces", networkPolicy={"queryAccess": "everyone"}))


def test_the_chart_operator_pod_carries_the_labels_the_kv_policy_lets_in() -> None:
    """clientAccess: labelled admits the operator by label (it asks leaving members whether
    they drained): the pods of manifests/install.yaml (the chart) must carry it."""
    from pathlib import Path

    import yaml

    from kvtrace_operator.render.networkpolicy import OPERATOR_LABELS

    install = Path(__file__).resolve().parents[2] / "manifests" / "install.yaml"
    [deployment] = [
        d for d in yaml.safe_load_all(install.read_text()) if d and d["kind"] == "Deployment"
    ]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert OPERATOR_LABELS.items() <= labels.items()
    policies, pods = setup(secure=True)
    assert allowed(policies, Pod("kvtrace-system", labels), pods["orders"], 7070)
