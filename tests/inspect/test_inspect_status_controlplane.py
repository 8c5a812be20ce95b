"""`kvtrace status` against the local cluster with the operator: a healthy cluster, then a
degraded one (a member that cannot be scheduled), then a missing pipeline; bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.controlplane

TIMEOUT = 90.0


def kvcluster(replicas: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "kv"},
        "spec": {
            "replicas": replicas,
            "tracing": {"pipelineRef": {"name": "traces"}},
            # three KWOK nodes: a fourth member cannot be scheduled
            "scheduling": {"podAntiAffinity": "required"},
        },
    }


def pipeline() -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces"},
        "spec": {
            "sampling": {"ratio": 0.25},
            "jaeger": {"archive": {"enabled": True, "maxTraces": 500}},
        },
    }


def test_status_of_healthy_then_degraded_cluster(
    operator: Any, kube_ns: Any, kvtrace_cli: Any, poll: Any
) -> None:
    ns = kube_ns.namespace
    kube_ns.apply(pipeline(), kvcluster())

    def report(*extra: str) -> dict[str, Any]:
        result = kvtrace_cli("status", "-n", ns, "-o", "json", *extra)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def ready(rep: dict[str, Any]) -> bool:
        items = rep["kvclusters"] + rep["tracingpipelines"]
        return (
            len(items) == 2
            and rep["tracingpipelines"][0]["consumers"] == ["kv"]
            and all(
                any(c["type"] == "Ready" and c["status"] == "True" for c in item["conditions"])
                for item in items
            )
        )

    rep = poll(
        lambda: (lambda r: r if ready(r) else None)(report()),
        timeout=TIMEOUT,
        message="kvtrace status shows both resources Ready",
    )
    (cluster,), (tp,) = rep["kvclusters"], rep["tracingpipelines"]
    assert cluster["ready"] == "3/3" and cluster["phase"] == "Running"
    assert [(m["name"], m["ready"]) for m in cluster["members"]] == [
        ("kv-0", True),
        ("kv-1", True),
        ("kv-2", True),
    ]
    assert all(m["node"].startswith("kwok-node-") for m in cluster["members"])
    assert cluster["pipeline"] == "traces"
    assert (cluster["sampling"]["mode"], cluster["sampling"]["ratio"]) == ("production", 0.25)
    assert cluster["endpoints"]["client"] == f"https://kv.{ns}.svc.cluster.local:7070"
    assert tp["collector"] == "1/1" and tp["jaeger"] == "1/1" and tp["consumers"] == ["kv"]
    assert tp["storage"] == {  # the API server's defaults filled in
        "traces": {"type": "memory", "maxTraces": 100000},
        "archive": {"type": "memory", "maxTraces": 500},
    }
    assert (
        tp["endpoints"]["otlpHttp"] == f"https://traces-collector.{ns}.svc.cluster.local:4318"
    )  # TLS default
    assert {e["reason"] for e in cluster["events"]} & {
        "Created",
        "Updated",
        "Ready",
    }  # the last five

    table = kvtrace_cli("status", "-n", ns, "kv")
    assert table.returncode == 0, table.stderr
    assert (
        f"KVCluster {ns}/kv: Running, 3/3 members ready, pipeline traces, sampling production 0.25"
        in table.stdout
    )
    assert (
        f"Jaeger query: https://traces-jaeger-query.{ns}.svc.cluster.local:16686" in table.stdout
    )  # its leaf
    pipeline_table = kvtrace_cli("status", "-n", ns, "traces").stdout
    assert "  trace storage: memory, the newest 100000 traces (lost on restart)" in pipeline_table
    assert "  archive storage: memory, the newest 500 traces (lost on restart)" in pipeline_table
    assert (
        yaml.safe_load(kvtrace_cli("status", "-n", ns, "traces", "-o", "yaml").stdout)["kvclusters"]
        == []
    )

    # Degraded: a fourth member has no node left under required anti-affinity.
    kube_ns.run("scale", "kvcluster/kv", "--replicas=4")

    def stuck() -> dict[str, Any] | None:
        r = report("kv")
        members = {m["name"]: m for m in r["kvclusters"][0]["members"]}
        return r if "kv-3" in members and members["kv-3"]["reason"] == "Unschedulable" else None

    rep = poll(stuck, timeout=TIMEOUT, message="kv-3 reported Unschedulable")
    cluster = rep["kvclusters"][0]
    assert cluster["ready"] == "3/4" and not cluster["members"][3]["ready"]
    poll(
        lambda: (
            "kv-3" in (t := kvtrace_cli("status", "-n", ns, "kv").stdout)
            and "Unschedulable" in t
            and "NO" in t
        ),
        timeout=TIMEOUT,
        message="table shows kv-3 not ready",
    )

    # The pipeline goes away: the cluster says so.
    kube_ns.run("delete", "tracingpipeline", "traces", "--wait=false")
    poll(
        lambda: (lambda c: not c["pipelineFound"] and c["tracing"]["reason"] == "PipelineNotFound")(
            report()["kvclusters"][0]
        ),
        timeout=TIMEOUT,
        message="missing pipeline reported",
    )
    assert "pipeline traces (not found)" in kvtrace_cli("status", "-n", ns).stdout


def test_status_bad_input_is_one_line_naming_the_parameter(
    crds: Any, namespace: str, kvtrace_cli: Any, tmp_path: Path, local_cluster: Any
) -> None:
    missing = kvtrace_cli("status", "-n", namespace, "nope")
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == f"kvtrace status: error: NAME: no KVCluster or TracingPipeline named 'nope' in namespace {namespace}"
    )
    empty = kvtrace_cli("status", "-n", namespace)
    assert (
        empty.returncode == 0
        and empty.stdout == f"No KVClusters or TracingPipelines in namespace {namespace}.\n"
    )

    config = yaml.safe_load(Path(local_cluster.kubeconfig).read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(yaml.safe_dump(config))
    down = kvtrace_cli("status", "--kubeconfig", str(dead), "-n", namespace)
    assert (
        down.returncode == 3 and "cannot reach the API server at https://127.0.0.1:9" in down.stderr
    )
    assert "Traceback" not in down.stderr
    bad = kvtrace_cli("status", "-o", "xml")
    assert bad.returncode == 2 and "argument -o/--output: invalid choice: 'xml'" in bad.stderr


def test_kubectl_plugin_runs_the_same_commands(
    crds: Any, namespace: str, local_cluster: Any, tmp_path: Path
) -> None:
    """kubectl finds ``kubectl-kvtrace`` on PATH and hands it the arguments after ``kvtrace``
    (the console script of that name calls kvtrace.inspect.cli:kubectl_main, as this shim does)."""
    import os
    import subprocess
    import sys

    from kvtrace.devstack.cluster import kubectl_path

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "kubectl-kvtrace"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m kvtrace.inspect.cli "$@"\n')
    shim.chmod(0o755)
    env = {**local_cluster.env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [kubectl_path(), "kvtrace", "status", "-n", namespace],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"No KVClusters or TracingPipelines in namespace {namespace}.\n"
    missing = subprocess.run(
        [kubectl_path(), "kvtrace", "doctor", "-n", namespace, "nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert (
        f"kvtrace doctor: error: NAME: no KVCluster named 'nope' in namespace {namespace}"
        in missing.stderr
    )
