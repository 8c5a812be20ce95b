"""The containers tier on the real local control plane: the operator runs from its image as the
chart deploys it (its ServiceAccount's projected token, its Role; see conftest.py), and every pod
it makes runs as a container of its image (KV members: the kvnode image; collector: the
otelcol-kvtrace image; Jaeger and Prometheus: the local images) with the rendered command,
environment, security context and volumes. For examples/01 and 02: the example reaches Ready
with every child in place and every workload running and passing its readiness probe, a bench
Pod (the KV node image, run as a container too) loads the KV cluster
through its client Service, the traces reach Jaeger through the collector container, and a
configuration change rolls the KV containers, whose replacements serve the next bench. The
checks are the kind tier's (tests/examples/example_assertions.py)."""

from __future__ import annotations

import dataclasses
import json
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from image_stack import ImageOperator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from example_assertions import (
    apply_example,
    assert_bench_succeeded,
    assert_children,
    bench_pod,
    change_config_and_wait_rolled,
    expected_children,
    get_json,
    member_uids,
    pipeline_jaeger,
    wait_kv_traces,
    wait_ready,
)
from examples_lib import EXAMPLES

from kvtrace.devstack.podrunner import PodRunner
from kvtrace.devstack.proc import port_open
from kvtrace.devstack.pytest_plugin import poll

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]

TIMEOUT = 240.0  # the machine running the suite is small and busy


@dataclasses.dataclass(frozen=True)
class Example:
    folder: str
    cluster: str  # the KVCluster
    pipeline: str  # its TracingPipeline
    service: str  # the OTel service name of its spans


CASES = [
    Example("01-basic", "basic", "dev-traces", "basic"),
    Example("02-production-sampling", "orders", "prod-traces", "orders-kv"),
]


def members_listening(runner: PodRunner, uids: dict[str, str]) -> bool:
    """Each member pod of ``uids`` runs as a container started for that pod (its uid is in the
    container's name) that accepts connections on the client and peer ports."""
    for name, uid in uids.items():
        processes = runner.processes(name)
        process = processes.get("kvnode")
        if process is None or not process.alive():
            return False
        if f"-{uid[:8]}" not in getattr(process, "container_name", ""):
            return False
        address = runner.address(name)
        if not (port_open(address, 7070, timeout=0.5) and port_open(address, 7071, timeout=0.5)):
            return False
    return True


def probe(address: str, container: dict[str, Any]) -> str | None:
    """The container's readinessProbe (httpGet) asked as the kubelet asks it, at the pod's
    ``address``: None when it passes (2xx/3xx; https with no certificate check), else why."""
    get = (container.get("readinessProbe") or {}).get("httpGet")
    if get is None:
        return None
    port = get["port"]
    if not str(port).isdigit():
        port = next(p["containerPort"] for p in container["ports"] if p.get("name") == port)
    url = f"{get.get('scheme', 'HTTP').lower()}://{address}:{port}{get.get('path', '/')}"
    kubelet = ssl.create_default_context()
    kubelet.check_hostname, kubelet.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=3, context=kubelet) as resp:
            return None if 200 <= resp.status < 400 else f"{url}: HTTP {resp.status}"
    except (OSError, urllib.error.URLError) as exc:
        return f"{url}: {exc}"


def unready_workloads(kubectl: Any, runner: PodRunner, namespace: str, folder: Path) -> list[str]:
    """Every Deployment and StatefulSet the example renders has pods, each of whose containers
    runs (as a container of its image) and passes its readiness probe; what does not, said."""
    pods = get_json(kubectl, namespace, "pods")
    problems = []
    for workload in expected_children(folder, namespace):
        if workload["kind"] not in ("Deployment", "StatefulSet"):
            continue
        selector = workload["spec"]["selector"]["matchLabels"]
        mine = [
            pod
            for pod in pods
            if selector.items() <= (pod["metadata"].get("labels") or {}).items()
            and not pod["metadata"].get("deletionTimestamp")
        ]
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        problems += [] if mine else [f"{name}: no pod"]
        for pod in mine:
            processes = runner.processes(pod["metadata"]["name"])
            for container in pod["spec"]["containers"]:
                where = f"{name} {pod['metadata']['name']}/{container['name']}"
                process = processes.get(container["name"])
                if process is None or not process.alive():
                    problems.append(f"{where}: no container runs")
                elif (why := probe(runner.address(pod["metadata"]["name"]), container)) is not None:
                    problems.append(f"{where}: readiness {why}")
    return problems


def run_bench(kubectl: Any, runner: PodRunner, namespace: str, example: Example, name: str) -> None:
    """A bench Pod through the cluster's client Service (as its status names it), run as a
    container of the KV node image; it must finish with operations and no error."""
    status = get_json(kubectl, namespace, f"kvcluster.kvtrace.dev/{example.cluster}")[0]["status"]
    pod = bench_pod(
        namespace, status["endpoints"]["client"], cluster=example.cluster, seconds=15, name=name
    )
    kubectl("apply", "-f", "-", input=json.dumps(pod))

    def finished() -> Any:
        process = runner.processes(name).get("bench")
        return process if process is not None and process.returncode is not None else None

    process = poll(finished, timeout=180, interval=1, message=f"the {name} container to finish")
    assert_bench_succeeded(process.returncode, process.tail(200))


@pytest.mark.parametrize("example", [pytest.param(case, id=case.folder) for case in CASES])
def test_example_runs_in_containers_is_traced_and_rolls_on_a_config_change(
    image_operator: ImageOperator, kubectl: Any, namespace: str, example: Example
) -> None:
    folder = EXAMPLES / example.folder
    runner = image_operator.runner
    apply_example(kubectl, namespace, folder)
    wait_ready(kubectl, namespace, folder, timeout=TIMEOUT)
    assert_children(kubectl, namespace, folder)
    # Every workload of the example (KV members, collector, Jaeger, Prometheus) runs from its
    # image and passes its readiness probe, as a kubelet would require before Ready.
    last: list[list[str]] = [[]]

    def all_ready() -> bool:
        last[0] = unready_workloads(kubectl, runner, namespace, folder)
        return not last[0]

    try:
        poll(all_ready, timeout=TIMEOUT, interval=2)
    except AssertionError:
        pytest.fail(f"workloads not ready in containers: {last[0]}; {runner.errors}", pytrace=False)

    members = member_uids(kubectl, namespace, example.cluster)
    assert len(members) == 3, members
    poll(
        lambda: members_listening(runner, members),
        timeout=TIMEOUT,
        interval=1,
        message=f"the KV containers listening: {runner.errors}",
    )
    run_bench(kubectl, runner, namespace, example, "bench")
    jaeger = pipeline_jaeger(
        kubectl, namespace, example.pipeline, lambda host, port: runner.resolve(f"{host}:{port}")
    )
    wait_kv_traces(jaeger, example.service, timeout=TIMEOUT)

    rolled = change_config_and_wait_rolled(kubectl, namespace, example.cluster, timeout=TIMEOUT)
    poll(
        lambda: members_listening(runner, rolled),
        timeout=TIMEOUT,
        interval=1,
        message=f"containers of the replaced members listening: {runner.errors}",
    )
    run_bench(kubectl, runner, namespace, example, "bench-after-roll")

    assert image_operator.healthy(), "kopf's /healthz in the operator container stopped answering"
    assert image_operator.forbidden() == [], "the chart's RBAC refused the operator something"
