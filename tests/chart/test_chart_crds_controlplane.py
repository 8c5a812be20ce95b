"""The chart's lifecycle on a real API server of its own (CRDs are cluster-wide: these tests
install, change and delete them, which the session's shared cluster and its other tests must
never see): `helm install` creates the CRDs, `helm upgrade` with a changed CRD makes the API
server serve the change, `crds.install=false` installs none, `helm uninstall` keeps them; and
docs/install.md's uninstall order, run as written against the chart's operator, finishes
within deadlines with every finalizer released and nothing left behind."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import CHART, REPO, TOP_CRDS, ChartOperator, helm, helm_binary

from kvtrace.devstack import cluster as cluster_mod
from kvtrace.devstack.pytest_plugin import poll, require_binaries

pytestmark = pytest.mark.controlplane

CRD_NAMES = ("kvclusters.kvtrace.dev", "tracingpipelines.kvtrace.dev")
KVC = "kvclusters.kvtrace.dev"
# Deadlines of the documented uninstall steps (seconds); a hang fails the step that hangs.
STEP_DEADLINE = 120.0


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[cluster_mod.LocalCluster]:
    """A local cluster for this module only (one fake node)."""
    require_binaries(*cluster_mod.BINARIES)
    cluster = cluster_mod.LocalCluster(nodes=1)
    try:
        cluster.start()
    except (cluster_mod.StartupError, FileNotFoundError) as exc:
        pytest.fail(f"local cluster did not start:\n{exc}", pytrace=False)
    try:
        # Ready for helm: the API server says so and the controllers made the default
        # ServiceAccount (a busy machine answers 429 "storage is (re)initializing" before).
        poll(
            lambda: all(
                cluster.kubectl(*args, check=False).returncode == 0
                for args in (("get", "--raw", "/readyz"), ("get", "serviceaccount", "default"))
            ),
            timeout=90,
            message="the API server ready and the default ServiceAccount made",
        )
        yield cluster
    finally:
        cluster.stop()


def crd(cluster: cluster_mod.LocalCluster, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "crd", name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def kvcluster(name: str, **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "KVCluster",
            "metadata": {"name": name},
            "spec": {"replicas": 1, "replicationFactor": 1, **spec},
        }
    )


def changed_chart(workdir: Path) -> Path:
    """A copy of the chart whose KVCluster CRD has one more field (spec.upgradeProbe) and a
    changed description, templated by the repository's own generator."""
    sys.path.insert(0, str(REPO / "tools" / "chart"))
    try:
        import crd_templates
    finally:
        sys.path.remove(str(REPO / "tools" / "chart"))
    chart = workdir / "kvtrace-operator"
    shutil.copytree(CHART, chart)
    source = yaml.safe_load((TOP_CRDS / "kvtrace.dev_kvclusters.yaml").read_text())
    schema = source["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["spec"]["properties"]["upgradeProbe"] = {
        "type": "string",
        "description": "A field only the upgraded CRD has.",
    }
    schema["description"] = "KVCluster, as upgraded by helm."
    changed = workdir / "kvtrace.dev_kvclusters.yaml"
    changed.write_text(yaml.safe_dump(source, sort_keys=False))
    (chart / "templates" / "crds" / changed.name).write_text(crd_templates.template(changed))
    return chart


def test_helm_installs_upgrades_and_keeps_the_crds(
    own_cluster: cluster_mod.LocalCluster, tmp_path: Path
) -> None:
    cluster, kubeconfig = own_cluster, own_cluster.kubeconfig

    def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
        return helm(*args, "--namespace", "lifecycle", kubeconfig=kubeconfig, timeout=180)

    # crds.install=false: the release installs none.
    run_helm("install", "nocrds", str(CHART), "--create-namespace", "--set", "crds.install=false")
    assert [crd(cluster, name) for name in CRD_NAMES] == [None, None]
    run_helm("uninstall", "nocrds", "--wait", "--timeout", "120s")

    run_helm("install", "kvo", str(CHART))
    try:
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *[f"crd/{name}" for name in CRD_NAMES],
        )
        for name in CRD_NAMES:
            installed = crd(cluster, name)
            assert installed is not None
            assert installed["metadata"]["annotations"]["meta.helm.sh/release-name"] == "kvo"
            assert installed["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

        def apply_probe() -> subprocess.CompletedProcess[str]:
            """A KVCluster with the new field, under strict field validation."""
            return cluster.kubectl(
                "-n",
                "lifecycle",
                "apply",
                "--validate=strict",
                "-f",
                "-",
                input=kvcluster("probe", upgradeProbe="v2"),
                check=False,
            )

        # The installed CRD does not know the field: strict field validation refuses it.
        refused = apply_probe()
        assert refused.returncode != 0 and "upgradeProbe" in refused.stderr, refused.stderr

        upgraded = run_helm(
            "upgrade", "kvo", str(changed_chart(tmp_path)), "--reset-then-reuse-values"
        )
        assert "REVISION: 2" in upgraded.stdout, upgraded.stdout
        served = crd(cluster, KVC)
        assert served is not None
        schema = served["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert schema["description"] == "KVCluster, as upgraded by helm."
        assert "upgradeProbe" in schema["properties"]["spec"]["properties"]
        # ...and the API server serves it: the same object is now accepted, field kept.
        poll(
            lambda: apply_probe().returncode == 0,
            timeout=60,
            message="the upgraded CRD accepts spec.upgradeProbe",
        )
        stored = json.loads(
            cluster.kubectl("-n", "lifecycle", "get", KVC, "probe", "-o", "json").stdout
        )
        assert stored["spec"]["upgradeProbe"] == "v2"
    finally:
        run_helm("uninstall", "kvo", "--wait", "--timeout", "120s")
    # helm.sh/resource-policy: keep: the CRDs and the resource outlive the release.
    assert all(crd(cluster, name) is not None for name in CRD_NAMES)
    cluster.kubectl("-n", "lifecycle", "get", KVC, "probe")
    cluster.kubectl("-n", "lifecycle", "delete", KVC, "probe", "--wait", "--timeout=60s")
    cluster.kubectl("delete", "crd", *CRD_NAMES, "--wait", "--timeout=60s")


def documented_uninstall() -> list[str]:
    """The commands of docs/install.md's "uninstall in this order" block, in order."""
    text = (REPO / "docs" / "install.md").read_text()
    _, found, rest = text.partition("To remove everything, uninstall in this order")
    assert found, "docs/install.md: the uninstall order section is gone"
    block = re.search(r"```sh\n(.*?)```", rest, re.DOTALL)
    assert block is not None, "docs/install.md: no sh block after the uninstall order"
    return [
        line.strip()
        for line in block.group(1).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def example_01() -> str:
    """examples/01-basic, its pipeline without the Prometheus of spec.metrics: with only the
    chart's RBAC the operator's dry run of that Prometheus's RoleBinding is refused before its
    Role exists (RoleBinding "...-prometheus" not found), so the pipeline never applies; not
    what this test is about."""
    docs = [
        yaml.safe_load(path.read_text())
        for path in sorted((REPO / "examples" / "01-basic").glob("*.yaml"))
    ]
    for doc in docs:
        if doc["kind"] == "TracingPipeline":
            doc["spec"]["metrics"] = {"enabled": False}
    return yaml.safe_dump_all(docs)


def run_documented(
    cluster: cluster_mod.LocalCluster, command: str
) -> subprocess.CompletedProcess[str]:
    """One documented command as written, its kubectl and helm pointed at ``cluster``;
    fails the test when it does not finish within STEP_DEADLINE."""
    argv = shlex.split(command)
    tool = {"kubectl": cluster_mod.kubectl_path(), "helm": helm_binary()}[argv[0]]
    full = [tool, "--kubeconfig", str(cluster.kubeconfig), *argv[1:]]
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=STEP_DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{command}` hung: not done after {STEP_DEADLINE:.0f}s", pytrace=False)
    assert proc.returncode == 0, f"`{command}` failed:\n{proc.stderr}{proc.stdout}"
    return proc


def test_the_documented_uninstall_order_releases_every_finalizer(
    own_cluster: cluster_mod.LocalCluster, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The chart installed as docs/install.md says (release kvtrace-operator in
    kvtrace-system, CRDs with it), its operator run with exactly the chart's arguments and
    RBAC, example 01 applied and reconciled (the operator's finalizer on both resources);
    then the documented steps, verbatim: each finishes within its deadline, and afterwards no
    custom resource, child, CRD or webhook configuration is left."""
    from kvtrace.devstack.pytest_plugin import dump_log_if_failed

    cluster = own_cluster
    cluster.kubectl("create", "namespace", "kvtrace-system")
    cluster.kubectl("create", "namespace", "kv-demo")
    chart = ChartOperator(
        cluster,
        "kvtrace-system",
        tmp_path,
        scope="cluster",
        values=("--set", "crds.install=true", "--set", "canary.interval=off"),
    )
    chart.release = "kvtrace-operator"
    try:
        chart.install()
        chart.start()
        cluster.kubectl("-n", "kv-demo", "apply", "-f", "-", input=example_01())

        def finalized() -> bool:
            objects = json.loads(
                cluster.kubectl(
                    "-n", "kv-demo", "get", "kvclusters,tracingpipelines", "-o", "json"
                ).stdout
            )["items"]
            return len(objects) == 2 and all(o["metadata"].get("finalizers") for o in objects)

        poll(finalized, timeout=90, message="the operator's finalizer on both resources")
        poll(
            lambda: (
                cluster.kubectl(
                    "-n", "kv-demo", "get", "statefulset", "basic", check=False
                ).returncode
                == 0
            ),
            timeout=90,
            message="the KVCluster's StatefulSet",
        )
        assert chart.webhook is not None
        cluster.kubectl("get", "mutatingwebhookconfiguration", chart.webhook)

        steps = documented_uninstall()
        assert [shlex.split(step)[:2] for step in steps] == [
            ["kubectl", "delete"],
            ["helm", "uninstall"],
            ["kubectl", "delete"],
            ["kubectl", "delete"],
        ], steps
        run_documented(cluster, steps[0])  # the resources, while the operator runs
        run_documented(cluster, steps[1])  # the operator: helm deletes its Deployment...
        assert chart.process is not None
        chart.process.stop(timeout=20)  # ...which stops the pod this process stands for
        run_documented(cluster, steps[2])  # the CRDs
        run_documented(cluster, steps[3])  # the webhook configuration the operator applied
    finally:
        if chart.process is not None:
            chart.process.stop(timeout=20)
        dump_log_if_failed(request, "operator log", chart.log_path)
    assert [crd(cluster, name) for name in CRD_NAMES] == [None, None]
    assert (
        cluster.kubectl(
            "get", "mutatingwebhookconfiguration", chart.webhook, check=False
        ).returncode
        != 0
    )

    def children() -> list[str]:
        """What the resources' children left in kv-demo, with their owners."""
        listed = cluster.kubectl(
            "-n",
            "kv-demo",
            "get",
            "statefulsets,deployments,services,configmaps,secrets,serviceaccounts,networkpolicies",
            "-l",
            "app.kubernetes.io/part-of=kvtrace",
            "-o",
            "json",
        ).stdout
        return [
            f"{o['kind']}/{o['metadata']['name']} owners={o['metadata'].get('ownerReferences')}"
            for o in json.loads(listed)["items"]
        ]

    try:
        poll(lambda: children() == [], timeout=150, message="the garbage collector's work")
    except AssertionError:
        pytest.fail(f"children left after the uninstall: {children()}", pytrace=False)
    leftovers = cluster.kubectl(
        "get",
        "clusterrole,clusterrolebinding",
        "-o",
        "name",
        "-l",
        "app.kubernetes.io/instance=kvtrace-operator",
    ).stdout
    assert leftovers.strip() == ""


def test_upgrading_a_release_whose_crds_came_from_a_crds_folder(
    own_cluster: cluster_mod.LocalCluster, tmp_path: Path
) -> None:
    """A release of a chart with a crds/ folder (this chart's form before its CRDs became
    templates): its CRDs carry no helm ownership, so the upgrade that templates them is
    refused until it adopts them once with --take-ownership (docs/install.md); then they are
    the release's, kept on uninstall."""
    cluster, kubeconfig = own_cluster, own_cluster.kubeconfig
    old = tmp_path / "kvtrace-operator"
    shutil.copytree(CHART, old)
    shutil.rmtree(old / "templates" / "crds")
    shutil.copytree(TOP_CRDS, old / "crds")

    def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(*args, "--namespace", "adopt", kubeconfig=kubeconfig, check=check, timeout=180)

    run_helm("install", "old", str(old), "--create-namespace")
    try:
        installed = crd(cluster, KVC)
        assert installed is not None
        assert "meta.helm.sh/release-name" not in (installed["metadata"].get("annotations") or {})
        refused = run_helm("upgrade", "old", str(CHART), "--reset-then-reuse-values", check=False)
        assert refused.returncode != 0 and "cannot be imported" in refused.stderr, refused.stderr
        run_helm("upgrade", "old", str(CHART), "--reset-then-reuse-values", "--take-ownership")
        adopted = crd(cluster, KVC)
        assert adopted is not None
        annotations = adopted["metadata"]["annotations"]
        assert annotations["meta.helm.sh/release-name"] == "old"
        assert annotations["helm.sh/resource-policy"] == "keep"
    finally:
        run_helm("uninstall", "old", "--wait", "--timeout", "120s", check=False)
    assert all(crd(cluster, name) is not None for name in CRD_NAMES)
    cluster.kubectl("delete", "crd", *CRD_NAMES, "--wait", "--timeout=60s")
