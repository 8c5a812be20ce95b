"""The chart on the real local cluster: helm install (both watch scopes), the RBAC it grants
as the API server sees it, helm upgrade, helm uninstall; the injection webhook working with
only the chart's RBAC; and manifests/install.yaml applied with kubectl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import CHART, INSTALL_YAML, ChartOperator

pytestmark = pytest.mark.controlplane


def can_i(kubectl: Any, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    proc = kubectl("auth", "can-i", verb, resource, f"--as={user}", *scope, check=False)
    return bool(proc.stdout.strip() == "yes")


def test_install_upgrade_uninstall_cluster_scope(
    local_cluster: Any, crds: Any, kubectl: Any, namespace: str, tmp_path: Path
) -> None:
    chart = ChartOperator(local_cluster, namespace, tmp_path, scope="cluster")
    chart.install()
    try:
        deployment = json.loads(
            kubectl(
                "-n",
                namespace,
                "get",
                "deployment",
                chart.deployment()["metadata"]["name"],
                "-o",
                "json",
            ).stdout
        )
        assert deployment["status"].get("availableReplicas") == 1
        assert "--all-namespaces" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        user = f"system:serviceaccount:{namespace}:{chart.service_account()}"
        # What the operator needs, everywhere...
        for verb, resource in [
            ("watch", "kvclusters.kvtrace.dev"),
            ("patch", "kvclusters.kvtrace.dev/status"),
            ("patch", "statefulsets.apps"),
            ("delete", "deployments.apps"),
            ("create", "poddisruptionbudgets.policy"),
            ("list", "pods"),
            ("create", "events"),
            ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
            # the injection webhook (on by default)
            ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
            (
                "patch",
                "mutatingwebhookconfigurations.admissionregistration.k8s.io/kvtrace-injection",
            ),
            ("get", "replicasets.apps"),
            ("patch", "daemonsets.apps"),
        ]:
            assert can_i(kubectl, user, verb, resource, None), f"cannot {verb} {resource}"
        # ...and nothing it does not.
        for verb, resource in [
            ("create", "clusterroles.rbac.authorization.k8s.io"),
            ("get", "nodes"),
            ("delete", "persistentvolumeclaims"),
            ("create", "pods"),
            ("delete", "kvclusters.kvtrace.dev"),
            ("update", "statefulsets.apps"),
            ("create", "customresourcedefinitions.apiextensions.k8s.io"),
            ("impersonate", "serviceaccounts"),
            ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/other"),
            ("delete", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
            ("patch", "replicasets.apps"),
            ("get", "jobs.batch"),
        ]:
            assert not can_i(kubectl, user, verb, resource, None), f"may {verb} {resource}"

        upgraded = chart.helm(
            "upgrade",
            chart.release,
            str(CHART),
            "--reuse-values",
            "--set",
            "operator.verbose=true",
            "--wait",
            "--timeout",
            "120s",
        )
        assert "REVISION: 2" in upgraded.stdout, upgraded.stdout
        args = chart.deployment()["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--verbose" in args and "--all-namespaces" in args
    finally:
        chart.helm("uninstall", chart.release, "--wait", "--timeout", "120s")
    leftovers = kubectl(
        "get",
        "clusterrole,clusterrolebinding",
        "-o",
        "name",
        "-l",
        f"app.kubernetes.io/instance={chart.release}",
    ).stdout
    assert leftovers.strip() == ""
    assert (
        kubectl(
            "-n",
            namespace,
            "get",
            "deployment,serviceaccount,service",
            "-o",
            "name",
            "-l",
            f"app.kubernetes.io/instance={chart.release}",
        ).stdout.strip()
        == ""
    )
    # The release installed no CRDs (crds.install=false, the crds fixture's are shared): they
    # stay. test_chart_crds_controlplane.py owns them on a cluster of its own.
    kubectl("get", "crd", "kvclusters.kvtrace.dev", "tracingpipelines.kvtrace.dev")


def test_namespace_scope_grants_only_the_watched_namespace(
    local_cluster: Any, kubectl: Any, namespace: str, tmp_path: Path
) -> None:
    chart = ChartOperator(local_cluster, namespace, tmp_path, scope="namespace")
    chart.install()
    try:
        user = f"system:serviceaccount:{namespace}:{chart.service_account()}"
        assert can_i(kubectl, user, "patch", "statefulsets.apps", namespace)
        assert can_i(kubectl, user, "watch", "tracingpipelines.kvtrace.dev", namespace)
        assert not can_i(kubectl, user, "patch", "statefulsets.apps", "default")
        assert not can_i(kubectl, user, "list", "kvclusters.kvtrace.dev", "default")
        assert can_i(kubectl, user, "list", "namespaces", None)
        assert not can_i(kubectl, user, "delete", "namespaces", None)
    finally:
        chart.uninstall()


def annotated(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A Deployment or Job whose pods ask for the pipeline ``traces``."""
    template = {
        "metadata": {
            "labels": {"app": name},
            "annotations": {
                "kvtrace.dev/inject": "traces",
                "kvtrace.dev/restart-on-change": "true",
            },
        },
        "spec": {"containers": [{"name": "app", "image": "shop:1", "command": ["sleep", "60"]}]},
    }
    api = "apps/v1" if kind == "Deployment" else "batch/v1"
    if kind == "Job":
        template["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name},
        "spec": {**spec, "template": template},
    }


def test_injection_works_with_only_the_charts_rbac(
    local_cluster: Any,
    crds: Any,
    namespace: str,
    tmp_path: Path,
    kube_ns: Any,
    poll: Any,
    request: Any,
) -> None:
    """The operator run as the chart runs it (its ServiceAccount's token, the webhook on
    loopback instead of the Service) registers its webhook, injects a Deployment's and a Job's
    pods (their owners read, their token Secrets written) and syncs them into the pipeline,
    with no request refused."""
    chart = ChartOperator(
        local_cluster, namespace, tmp_path, values=("--set", "canary.interval=off")
    )
    with chart.installed(request):
        assert chart.webhook is not None
        poll(
            lambda: (
                kube_ns.run(
                    "get", "mutatingwebhookconfiguration", chart.webhook, check=False
                ).returncode
                == 0
            ),
            timeout=60,
            message="the webhook configuration applied with the chart's RBAC",
        )
        kube_ns.apply(
            {
                "apiVersion": "kvtrace.dev/v1alpha1",
                "kind": "TracingPipeline",
                "metadata": {"name": "traces"},
                "spec": {"sampling": {"mode": "head", "ratio": 1}},
            }
        )
        poll(lambda: kube_ns.get("secret", "traces-tls-trust"), timeout=90, message="CA bundle")
        kube_ns.apply(
            annotated(
                "Deployment", "web", {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}}
            ),
            annotated("Job", "batch", {"backoffLimit": 0}),
        )
        for app in ("web", "batch"):
            pod = poll(
                lambda a=app: kube_ns.list("pods", f"app={a}"), timeout=90, message=f"pod {app}"
            )[0]
            annotations = pod["metadata"]["annotations"]
            assert annotations.get("kvtrace.dev/injected") == f"{namespace}/traces", annotations
        workloads = [f"{namespace}/Deployment/web", f"{namespace}/Job/batch"]
        poll(
            lambda: (
                sorted(
                    (kube_ns.get("tracingpipeline", "traces").get("status") or {}).get(
                        "instrumentedWorkloads"
                    )
                    or []
                )
                == workloads
            ),
            timeout=90,
            message="status.instrumentedWorkloads",
        )
        assert chart.forbidden() == []


def test_install_manifest_applies_with_kubectl(kubectl: Any, poll: Any) -> None:
    """`kubectl apply --server-side -f manifests/install.yaml`, then remove all of it but the
    CRDs (other tests' resources use them)."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(INSTALL_YAML), timeout=120)
    docs = [doc for doc in yaml.safe_load_all(INSTALL_YAML.read_text()) if doc]
    namespace = next(doc["metadata"]["name"] for doc in docs if doc["kind"] == "Namespace")
    deployment = next(doc["metadata"]["name"] for doc in docs if doc["kind"] == "Deployment")
    try:
        poll(
            lambda: (
                json.loads(
                    kubectl("-n", namespace, "get", "deployment", deployment, "-o", "json").stdout
                )["status"].get("availableReplicas")
                == 1
            ),
            timeout=120,
            message="operator Deployment available",
        )
    finally:
        for doc in docs:
            if doc["kind"] in ("CustomResourceDefinition", "Namespace"):
                continue
            ref = f"{doc['kind'].lower()}.{doc['apiVersion'].rpartition('/')[0] or ''}".rstrip(".")
            scope = ["-n", doc["metadata"]["namespace"]] if doc["metadata"].get("namespace") else []
            kubectl(
                *scope,
                "delete",
                f"{ref}/{doc['metadata']['name']}",
                "--ignore-not-found",
                "--wait=false",
            )
        kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")
