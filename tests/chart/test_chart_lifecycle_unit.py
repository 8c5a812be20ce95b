"""The chart's lifecycle values, offline: CRDs as templates generated from crds/ (crds.install,
crds.keep), the operator-wide default images (images.*, images.registry), the operator's
PodDisruptionBudget and topologySpreadConstraints."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml
from chartlib import CHART, REPO, TOP_CRDS, helm, operator_args, parse_operator_args, template

from kvtrace_operator.main import handler_options
from kvtrace_operator.render import images

pytestmark = pytest.mark.unit

GENERATOR = REPO / "tools" / "chart" / "crd_templates.py"
KEEP = "helm.sh/resource-policy"


def crds(*sets: str) -> list[dict[str, Any]]:
    extra = [arg for setting in sets for arg in ("--set", setting)]
    return [o for o in template(*extra) if o["kind"] == "CustomResourceDefinition"]


def deployment(*sets: str) -> dict[str, Any]:
    extra = [arg for setting in sets for arg in ("--set", setting)]
    return next(o for o in template(*extra) if o["kind"] == "Deployment")


# ---------------------------------------------------------------------------- CRDs
def test_crd_templates_are_generated_from_crds_and_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert not (CHART / "crds").exists(), "a crds/ folder would be install-only: use templates"


def test_rendered_crds_are_the_top_level_crds_plus_the_charts_labels_and_keep() -> None:
    rendered = {crd["metadata"]["name"]: crd for crd in crds()}
    sources = [yaml.safe_load(path.read_text()) for path in sorted(TOP_CRDS.glob("*.yaml"))]
    assert sorted(rendered) == sorted(source["metadata"]["name"] for source in sources)
    for source in sources:
        crd = rendered[source["metadata"]["name"]]
        metadata = crd.pop("metadata")
        assert crd == {key: value for key, value in source.items() if key != "metadata"}
        assert metadata["annotations"] == {KEEP: "keep"}
        assert source["metadata"]["labels"].items() <= metadata["labels"].items()
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert metadata["labels"]["app.kubernetes.io/instance"] == "kvtrace-operator"


def test_crds_install_false_renders_none_and_keep_false_drops_the_policy() -> None:
    assert crds("crds.install=false") == []
    assert len(crds()) == 2
    for crd in crds("crds.keep=false"):
        assert KEEP not in (crd["metadata"].get("annotations") or {})


def test_the_generator_refuses_what_it_cannot_template(tmp_path: Any) -> None:
    sys.path.insert(0, str(GENERATOR.parent))
    try:
        import crd_templates
    finally:
        sys.path.remove(str(GENERATOR.parent))
    source = (TOP_CRDS / "kvtrace.dev_kvclusters.yaml").read_text()
    cases = {
        "braces.yaml": (source.replace("Ready members", "{{ Ready }} members"), "'{{'"),
        "meta.yaml": (
            source.replace("metadata:\n", "metadata:\n  finalizers: [x]\n", 1),
            "metadata.finalizers is not templated",
        ),
    }
    for name, (text, phrase) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(crd_templates.CRDError, match=phrase):
            crd_templates.template(path)


# ---------------------------------------------------------------------------- images
IMAGE_FLAGS = {
    "--kvnode-image": images.KVNODE_IMAGE,
    "--collector-image": images.COLLECTOR_IMAGE,
    "--jaeger-image": images.JAEGER_IMAGE,
    "--prometheus-image": images.PROMETHEUS_IMAGE,
    "--python-agent-image": images.PYTHON_AGENT_IMAGE,
    "--java-agent-image": images.JAVA_AGENT_IMAGE,
}


def flag_values(args: list[str]) -> dict[str, str]:
    return {
        flag: arg.partition("=")[2]
        for arg in args
        for flag in (*IMAGE_FLAGS, "--query-proxy-image")
        if arg.startswith(flag + "=")
    }


def test_image_values_default_to_the_operators_built_in_images() -> None:
    """values.yaml names exactly render/images.py's defaults (one source: this fails when
    one of them changes alone)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["images"]
    assert values == {
        "registry": "",
        "kvnode": images.KVNODE_IMAGE,
        "collector": images.COLLECTOR_IMAGE,
        "jaeger": images.JAEGER_IMAGE,
        "prometheus": images.PROMETHEUS_IMAGE,
        "pythonAgent": images.PYTHON_AGENT_IMAGE,
        "javaAgent": images.JAVA_AGENT_IMAGE,
    }
    assert flag_values(operator_args()) == {
        **IMAGE_FLAGS,
        "--query-proxy-image": images.OPERATOR_IMAGE,
    }


def test_one_registry_setting_mirrors_every_image_the_operator_runs() -> None:
    registry = "registry.internal:5000/mirror"
    args = operator_args(f"images.registry={registry}/")
    chosen = handler_options(parse_operator_args(args)).images
    assert chosen == images.Images(
        kvnode=f"{registry}/kvnode:0.1.0",
        collector=f"{registry}/otelcol-kvtrace:0.161.0",
        jaeger=f"{registry}/jaeger:2.13.0",
        prometheus=f"{registry}/prometheus:v3.16.0",
        query_proxy=f"{registry}/kvtrace-operator:0.1.0",
        python_agent=f"{registry}/autoinstrumentation-python:0.66b1",
        java_agent=f"{registry}/autoinstrumentation-java:2.22.0",
    )
    container = deployment(f"images.registry={registry}")["spec"]["template"]["spec"]
    assert container["containers"][0]["image"] == f"{registry}/kvtrace-operator:0.1.0"


def test_one_image_can_be_set_alone_and_a_digest_survives_the_registry() -> None:
    digest = "sha256:" + "0f" * 32
    args = operator_args(
        "images.kvnode=own/kvnode:dev", f"images.jaeger=jaegertracing/jaeger@{digest}"
    )
    chosen = handler_options(parse_operator_args(args)).images
    assert (chosen.kvnode, chosen.collector) == ("own/kvnode:dev", images.COLLECTOR_IMAGE)
    assert chosen.jaeger == f"jaegertracing/jaeger@{digest}"
    mirrored = operator_args(
        "images.registry=m.example", f"images.jaeger=jaegertracing/jaeger@{digest}"
    )
    assert flag_values(mirrored)["--jaeger-image"] == f"m.example/jaeger@{digest}"


# ---------------------------------------------------------------------------- PDB, spread
PEERED = ("peering.name=kvtrace", "webhook.enabled=false")


def pdbs(*sets: str) -> list[dict[str, Any]]:
    extra = [arg for setting in sets for arg in ("--set", setting)]
    return [o for o in template(*extra) if o["kind"] == "PodDisruptionBudget"]


def test_one_replica_gets_no_budget_and_no_spread_unless_asked() -> None:
    assert pdbs() == []
    assert "topologySpreadConstraints" not in deployment()["spec"]["template"]["spec"]
    [pdb] = pdbs("podDisruptionBudget.enabled=true")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_several_replicas_get_a_budget_and_a_soft_spread_over_nodes() -> None:
    sets = ("replicaCount=2", *PEERED)
    [pdb] = pdbs(*sets)
    selector = deployment(*sets)["spec"]["selector"]["matchLabels"]
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    spread = deployment(*sets)["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread == [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }
    ]
    [minimum] = pdbs(*sets, "podDisruptionBudget.minAvailable=50%")
    assert minimum["spec"]["minAvailable"] == "50%" and "maxUnavailable" not in minimum["spec"]
    [zero] = pdbs(*sets, "podDisruptionBudget.maxUnavailable=0")
    assert zero["spec"]["maxUnavailable"] == 0


def test_given_spread_constraints_get_the_pods_selector() -> None:
    given = [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
        },
        {
            "maxSkew": 2,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"own": "x"}},
        },
    ]
    rendered = template("--set-json", f"topologySpreadConstraints={json.dumps(given)}")
    pod = next(o for o in rendered if o["kind"] == "Deployment")["spec"]["template"]
    selector = next(o for o in rendered if o["kind"] == "Deployment")["spec"]["selector"]
    spread = pod["spec"]["topologySpreadConstraints"]
    assert spread[0] == {**given[0], "labelSelector": selector}
    assert spread[1] == given[1]


def refusal(*sets: str) -> str:
    """helm's error for values the chart refuses (the test fails when it accepts them)."""
    proc = helm("template", "t", str(CHART), *[a for s in sets for a in ("--set", s)], check=False)
    assert proc.returncode != 0, f"accepted: {sets}"
    return proc.stderr


def test_a_budget_with_both_bounds_is_refused() -> None:
    error = refusal("podDisruptionBudget.minAvailable=1", "podDisruptionBudget.maxUnavailable=1")
    assert "minAvailable or maxUnavailable, not both" in error


# ---------------------------------------------------------------------------- helm test
HOOK = "helm.sh/hook"


def hook_objects(*sets: str) -> list[dict[str, Any]]:
    extra = [arg for setting in sets for arg in ("--set", setting)]
    return [
        o
        for o in template(*extra, tests=True)
        if (o["metadata"].get("annotations") or {}).get(HOOK) == "test"
    ]


def hook_pod(*sets: str) -> dict[str, Any]:
    [pod] = [o for o in hook_objects(*sets) if o["kind"] == "Pod"]
    return pod


def test_the_test_hook_is_only_a_hook_and_never_installed() -> None:
    assert {o["kind"] for o in hook_objects()} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Pod",
    }
    assert not any(HOOK in (o["metadata"].get("annotations") or {}) for o in template())
    assert hook_objects("tests.enabled=false") == []
    for obj in hook_objects():
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"


def test_the_hook_pod_runs_kvtrace_status_restricted_and_is_no_operator_replica() -> None:
    from kvtrace.cli import build_parser
    from kvtrace_operator.render.networkpolicy import OPERATOR_LABELS

    pod = hook_pod()
    selector = deployment()["spec"]["selector"]["matchLabels"]
    labels = pod["metadata"]["labels"]
    assert not selector.items() <= labels.items(), "the Deployment would adopt the test pod"
    assert OPERATOR_LABELS.items() <= labels.items()  # the pipelines' policies admit it
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["securityContext"]["runAsNonRoot"] is True
    [container] = spec["containers"]
    assert container["image"] == images.OPERATOR_IMAGE
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"]["memory"]
    argv = [*container["command"][1:], *container["args"]]
    assert container["command"] == ["kvtrace"] and argv == ["status", "--all-namespaces"]
    parsed = build_parser().parse_args(argv)  # the real CLI accepts it
    assert parsed.command == "status" and parsed.all_namespaces
    service_account = next(o for o in hook_objects() if o["kind"] == "ServiceAccount")
    assert spec["serviceAccountName"] == service_account["metadata"]["name"]


def hook_rules(*sets: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [
        (o["kind"], o["metadata"].get("namespace"), rule)
        for o in hook_objects(*sets)
        if o["kind"] in ("Role", "ClusterRole")
        for rule in o["rules"]
    ]


def test_the_hooks_rbac_reads_only_and_no_secrets_without_the_doctor() -> None:
    for sets in [(), ("watch.scope=namespace", "watch.namespaces={team-a,team-b}")]:
        rules = hook_rules(*sets)
        assert rules
        for _, _, rule in rules:
            assert set(rule["verbs"]) <= {"get", "list"}, rule
            assert "secrets" not in rule["resources"], rule
            assert "*" not in " ".join(rule["resources"] + rule["apiGroups"]), rule
    namespaced = hook_rules("watch.scope=namespace", "watch.namespaces={team-a,team-b}")
    assert {(kind, ns) for kind, ns, _ in namespaced} == {("Role", "team-a"), ("Role", "team-b")}
    containers = hook_pod("watch.scope=namespace", "watch.namespaces={team-a,team-b}")["spec"][
        "containers"
    ]
    assert [c["args"] for c in containers] == [
        ["status", "-n", "team-a"],
        ["status", "-n", "team-b"],
    ]


def test_tests_kvcluster_runs_the_doctor_with_that_namespaces_secrets() -> None:
    from kvtrace.cli import build_parser

    sets = ("tests.kvcluster=shop/orders",)
    [container] = hook_pod(*sets)["spec"]["containers"]
    assert container["args"] == ["doctor", "-n", "shop", "orders"]
    parsed = build_parser().parse_args(container["args"])
    assert (parsed.command, parsed.namespace, parsed.name) == ("doctor", "shop", "orders")
    secrets = [(kind, ns, r) for kind, ns, r in hook_rules(*sets) if "secrets" in r["resources"]]
    assert [(kind, ns, r["verbs"]) for kind, ns, r in secrets] == [("Role", "shop", ["get"])]
    error = refusal(
        "watch.scope=namespace", "watch.namespaces={team-a}", "tests.kvcluster=shop/orders"
    )
    assert "tests.kvcluster: namespace shop is not watched" in error
