"""`helm test` against the chart installed on the local control plane. KWOK pods run nothing:
the repository's pod runner runs the hook pod's command (`kvtrace status`) as a local process
whose only credential is a token of the hook's own ServiceAccount (so the hook's RBAC is what
is tested), and this test then reports the process's exit as the pod's phase, as a kubelet
would. `helm test` passes or fails on that phase."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from chartlib import CHART, REPO, ChartOperator, helm_binary

from kvtrace.devstack.podrunner import PodRunner
from kvtrace.devstack.pytest_plugin import poll, token_kubeconfig

pytestmark = pytest.mark.controlplane

TEST_LABELS = {"app.kubernetes.io/name": "kvtrace-operator-test"}


def helm_test(chart: ChartOperator) -> subprocess.Popen[str]:
    """`helm test RELEASE` (it waits for the hook pod's phase)."""
    return subprocess.Popen(
        [
            helm_binary(),
            "test",
            chart.release,
            "--namespace",
            chart.namespace,
            "--kubeconfig",
            str(chart.cluster.kubeconfig),
            "--timeout",
            "120s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_hook_pod(
    chart: ChartOperator, endpoint_map: Any, workdir: Path
) -> tuple[str, dict[str, int], str]:
    """Play the kubelet for the hook pod: run it with the pod runner under its own
    ServiceAccount's token, then set its phase from the exit codes. Returns the pod's name,
    each container's exit code and the processes' output."""
    kubectl, namespace = chart.cluster.kubectl, chart.namespace
    workdir.mkdir(parents=True, exist_ok=True)

    def hook_pod() -> dict[str, Any] | None:
        pods = json.loads(
            kubectl(
                "-n",
                namespace,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=kvtrace-operator-test",
                "-o",
                "json",
            ).stdout
        )["items"]
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        return running[0] if running else None

    pod = poll(hook_pod, timeout=60, message="the helm test pod, Running under KWOK")
    name = pod["metadata"]["name"]
    token = token_kubeconfig(
        chart.cluster, namespace, pod["spec"]["serviceAccountName"], workdir / "test.kubeconfig"
    )
    runner = PodRunner(
        chart.cluster,
        namespace,
        TEST_LABELS,
        workdir=workdir / "pods",
        endpoint_map=endpoint_map,
        env={"KUBECONFIG": str(token)},
    ).start()
    try:
        processes = poll(
            lambda: (
                runner.processes(name)
                if runner.processes(name)
                and all(p.returncode is not None for p in runner.processes(name).values())
                else None
            ),
            timeout=90,
            message="the hook's processes exited",
        )
        codes = {container: int(p.returncode or 0) for container, p in processes.items()}
        output = "\n".join(runner.logs(name, container) for container in processes)
    finally:
        runner.stop()
    phase = "Succeeded" if not any(codes.values()) else "Failed"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    started = (pod.get("status") or {}).get("startTime") or now
    statuses = [
        {
            "name": container,
            "image": pod["spec"]["containers"][0]["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": now,
                }
            },
        }
        for container, code in codes.items()
    ]
    kubectl(
        "-n",
        namespace,
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": phase, "containerStatuses": statuses}}),
    )
    return name, codes, output


def test_helm_test_runs_kvtrace_status_with_only_its_own_rbac(
    local_cluster: Any,
    crds: Any,
    namespace: str,
    endpoint_map: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    chart = ChartOperator(
        local_cluster, namespace, tmp_path, values=("--set", "canary.interval=off")
    )
    with chart.installed(request):
        local_cluster.kubectl(
            "-n", namespace, "apply", "-f", str(REPO / "examples" / "01-basic" / "pipeline.yaml")
        )
        test = helm_test(chart)
        try:
            name, codes, output = run_hook_pod(chart, endpoint_map, tmp_path)
            out, _ = test.communicate(timeout=120)
        finally:
            if test.poll() is None:
                test.kill()
        assert codes == {"status-" + namespace: 0}, output
        # `kvtrace status` listed the namespace's pipeline: the CRDs are served and the hook's
        # RBAC reads them.
        assert "dev-traces" in output, output
        assert "forbidden" not in output.lower(), output
        assert test.returncode == 0, out
        assert "Phase:          Succeeded" in out or "Phase: Succeeded" in " ".join(out.split()), (
            out
        )
        # hook-succeeded: the test's pod, ServiceAccount and RBAC are gone again.
        poll(
            lambda: (
                local_cluster.kubectl(
                    "-n",
                    namespace,
                    "get",
                    "pod,serviceaccount,role,rolebinding",
                    "-o",
                    "name",
                    "-l",
                    "app.kubernetes.io/name=kvtrace-operator-test",
                ).stdout.strip()
                == ""
            ),
            timeout=60,
            message="the hook's objects deleted after the pass",
        )
        assert name

        # The hook can fail: the doctor on a KVCluster that does not exist exits non-zero, the
        # pod fails, and so does `helm test` (the failed pod stays for its logs).
        chart.helm(
            "upgrade",
            chart.release,
            str(CHART),
            "--reuse-values",
            "--set",
            f"tests.kvcluster={namespace}/missing",
        )
        test = helm_test(chart)
        try:
            _, codes, output = run_hook_pod(chart, endpoint_map, tmp_path / "failing")
            out, _ = test.communicate(timeout=120)
        finally:
            if test.poll() is None:
                test.kill()
        assert list(codes) == ["doctor"] and codes["doctor"] != 0, output
        assert "missing" in output, output
        assert test.returncode != 0, out
