"""The Helm chart, offline: CRD copies, the generated install manifest, lint, Kubernetes 1.37
validation of everything it renders, least-privilege RBAC and the values schema."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml
from chartlib import (
    CHART,
    INSTALL_YAML,
    K8S_VERSION,
    NAMESPACED_VALUES,
    expected_install_yaml,
    helm,
    rbac_rules,
    template,
)

pytestmark = pytest.mark.unit

VARIANTS = {
    "default": (),
    "namespaced": NAMESPACED_VALUES,
    "no-webhook": ("--set", "webhook.enabled=false"),
}


def test_install_manifest_is_the_fresh_helm_template_output() -> None:
    assert INSTALL_YAML.is_file(), "manifests/install.yaml is missing: run `make manifests`"
    assert INSTALL_YAML.read_text() == expected_install_yaml(), (
        "manifests/install.yaml is stale (chart or CRDs changed): run `make manifests`"
    )


def test_install_manifest_is_complete() -> None:
    kinds = sorted({doc["kind"] for doc in yaml.safe_load_all(INSTALL_YAML.read_text()) if doc})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "Service",
        "ServiceAccount",
    ]


@pytest.mark.parametrize(
    "extra",
    [
        (),
        NAMESPACED_VALUES,
        ("--set", "metrics.serviceMonitor.enabled=true"),
        (
            "--set",
            "peering.name=kvtrace",
            "--set",
            "replicaCount=2",
            "--set",
            "webhook.enabled=false",
        ),
        ("--set", "webhook.enabled=false"),
    ],
    ids=["default", "namespaced", "servicemonitor", "peering", "no-webhook"],
)
def test_helm_lint_strict_is_clean(extra: tuple[str, ...]) -> None:
    proc = helm("lint", "--strict", "--kube-version", "1.37.2", str(CHART), *extra)
    assert "0 chart(s) failed" in proc.stdout, proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_validates_against_kubernetes_1_37(variant: str) -> None:
    objects = template(*VARIANTS[variant])
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except (
            kubernetes_validate.ValidationError,
            kubernetes_validate.SchemaNotFoundError,
        ) as exc:
            pytest.fail(f"{variant}: {obj['kind']}/{obj['metadata']['name']} is invalid: {exc}")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rbac_has_no_wildcards_and_every_rule_is_commented(variant: str) -> None:
    objects = template(*VARIANTS[variant])
    rules = rbac_rules(objects)
    assert rules
    for where, rule in rules:
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in " ".join(rule.get(key) or ()), f"{where}: wildcard in {key}: {rule}"
        assert "nonResourceURLs" not in rule, f"{where}: {rule}"
        # Nothing ever gets cluster-wide RBAC or the cluster's own configuration. Namespaced
        # Roles/RoleBindings (a pipeline's Prometheus reads its own namespace's pods) are
        # allowed: without escalate or bind (checked below) the API server lets the operator
        # grant only what it holds itself.
        assert not {
            "clusterroles",
            "clusterrolebindings",
            "customresourcedefinitions/status",
            "nodes",
        } & set(rule["resources"]), rule
        assert not {"escalate", "bind", "impersonate", "update", "deletecollection"} & set(
            rule["verbs"]
        ), rule
    # Each rule (or group of rules) is preceded by a comment saying why.
    rendered = helm(
        "template", "t", str(CHART), *VARIANTS[variant], "--show-only", "templates/rbac.yaml"
    ).stdout
    lines = rendered.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            before = [prev.strip() for prev in lines[:index] if prev.strip()]
            assert before[-1].startswith("#") or before[-1].startswith("verbs:"), (
                f"{variant}: uncommented rule at line {index + 1}: {line}"
            )


def test_cluster_scope_is_one_clusterrole_and_namespace_scope_uses_roles() -> None:
    default = {(o["kind"], o["metadata"].get("namespace")) for o in template()}
    assert ("ClusterRole", None) in default and ("ClusterRoleBinding", None) in default
    assert not any(kind in ("Role", "RoleBinding") for kind, _ in default)

    namespaced = template(*NAMESPACED_VALUES)
    roles = sorted(o["metadata"]["namespace"] for o in namespaced if o["kind"] == "Role")
    bindings = sorted(o["metadata"]["namespace"] for o in namespaced if o["kind"] == "RoleBinding")
    assert roles == bindings == ["team-a", "team-b"]
    cluster_rules = [
        rule for where, rule in rbac_rules(namespaced) if where.startswith("ClusterRole/")
    ]
    # Only reads stay cluster-wide in namespace scope, but for the injection webhook's own
    # MutatingWebhookConfiguration, which is cluster-scoped (test_chart_webhook_unit.py).
    reads = [r for r in cluster_rules if r["resources"] != ["mutatingwebhookconfigurations"]]
    assert {verb for rule in reads for verb in rule["verbs"]} <= {"get", "list", "watch"}
    # The Roles hold exactly the namespaced rules the cluster-scope ClusterRole holds.
    role_rules = [rule for where, rule in rbac_rules(namespaced) if where.startswith("Role/")]
    cluster_role_rules = [rule for _, rule in rbac_rules(template())]
    assert all(rule in cluster_role_rules for rule in role_rules)
    deployment = next(o for o in namespaced if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args


def test_deployment_probes_kopf_health_and_is_restricted() -> None:
    deployment = next(o for o in template() if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert "--all-namespaces" in container["args"]
    assert "--metrics-port=9090" in container["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    service = next(o for o in template() if o["kind"] == "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_service_monitor_is_optional() -> None:
    assert not any(o["kind"] == "ServiceMonitor" for o in template())
    monitors = [
        o
        for o in template("--set", "metrics.serviceMonitor.enabled=true")
        if o["kind"] == "ServiceMonitor"
    ]
    assert len(monitors) == 1 and monitors[0]["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("replicaCount=three", "/replicaCount"),
        ("watch.scope=everywhere", "/watch/scope"),
        ("healthPort=http", "/healthPort"),
        ("rbac.create=maybe", "/rbac/create"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("image.digest=latest", "/image/digest"),
        ("unknownValue=1", "unknownValue"),
        ("canary.interval=soon", "/canary/interval"),
        ("canary.timeout=0", "/canary/timeout"),
        ("tracing.pipeline=traces", "/tracing/pipeline"),
        ("canary.every=1m", "every"),
        ("webhook.enabled=yes", "/webhook/enabled"),
        ("webhook.port=0", "/webhook/port"),
        ("webhook.failurePolicy=Fail", "failurePolicy"),
        ("images.kvnode=", "/images/kvnode"),
        ("images.collector=a b", "/images/collector"),
        ("images.registry=https://mirror", "/images/registry"),
        ("images.operator=x", "operator"),
        ("crds.install=yes", "/crds/install"),
        ("crds.upgrade=true", "upgrade"),
        ("podDisruptionBudget.minAvailable=half", "/podDisruptionBudget/minAvailable"),
        ("topologySpreadConstraints[0].maxSkew=0", "/topologySpreadConstraints/0"),
        ("tests.kvcluster=basic", "/tests/kvcluster"),
    ],
)
def test_values_schema_rejects_bad_values_naming_them(setting: str, named: str) -> None:
    proc = helm("template", "t", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0, f"--set {setting} was accepted"
    assert named in proc.stderr, proc.stderr


def test_values_schema_covers_every_value() -> None:
    """values.yaml and values.schema.json name the same top-level values."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])


def test_every_top_level_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith(("#", " ")) and ":" in line:
            assert index > 0 and lines[index - 1].startswith("#"), (
                f"values.yaml: {line!r} has no comment"
            )


def test_several_replicas_need_peering() -> None:
    proc = helm("template", "t", str(CHART), "--set", "replicaCount=2", check=False)
    assert proc.returncode != 0 and "peering.name" in proc.stderr


def plural(kind: str) -> str:
    lower = kind.lower()
    return lower[:-1] + "ies" if lower.endswith("y") else lower + "s"


def granted(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in rules
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_covers_what_the_operator_applies_and_prunes() -> None:
    """Every kind the apply layer prunes (lists, watches, deletes) and every kind the renderers
    produce for the examples (server-side apply) is granted: a new child kind in the operator
    fails here before it fails with a 403 on a cluster."""
    import sys

    from kvtrace_operator import k8s
    from kvtrace_operator.render import render_all

    sys.path.insert(0, str(CHART.parents[1] / "tests" / "examples"))
    from examples_lib import documents, folders

    rules = [rule for _, rule in rbac_rules(template())]
    for api_version, kind in k8s.PRUNABLE_KINDS:
        group = api_version.rpartition("/")[0]
        missing = {"get", "list", "watch", "create", "patch", "delete"} - granted(
            rules, group, plural(kind)
        )
        assert not missing, f"{kind}: the chart does not grant {sorted(missing)}"
    for folder in folders():
        docs = [
            {**d, "metadata": {**d["metadata"], "namespace": "x", "uid": "u"}}
            for d in documents(folder)
        ]
        for obj in render_all(docs):
            group = obj["apiVersion"].rpartition("/")[0]
            missing = {"get", "create", "patch"} - granted(rules, group, plural(obj["kind"]))
            assert not missing, (
                f"{folder.name}: {obj['kind']}: the chart does not grant {sorted(missing)}"
            )


def test_operator_pods_carry_the_labels_the_kv_network_policies_admit() -> None:
    """The KV members' NetworkPolicy lets the operator (any namespace) reach the client port
    for drains by these labels: the chart's pods must carry them."""
    from kvtrace_operator.render.networkpolicy import OPERATOR_LABELS

    for variant in VARIANTS.values():
        deployment = next(o for o in template(*variant) if o["kind"] == "Deployment")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert OPERATOR_LABELS.items() <= labels.items(), (labels, OPERATOR_LABELS)


def test_versions_agree() -> None:
    """The chart's appVersion is the package version, and the tag of the operator and KV node
    images (render/images.py, which `make images` builds)."""
    import tomllib

    from chartlib import REPO

    from kvtrace_operator.render.images import KVNODE_IMAGE, OPERATOR_IMAGE

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    tags = {image.rpartition(":")[2] for image in (OPERATOR_IMAGE, KVNODE_IMAGE)}
    assert {chart["appVersion"], project["version"]} | tags == {project["version"]}
