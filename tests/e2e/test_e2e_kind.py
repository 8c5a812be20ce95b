"""The kind tier: the whole product in a kind cluster prepared by `make kind-up` (the images
built and loaded, the chart installed; see conftest.py). Apply examples/01-basic, wait until it
is Ready with every child in place (the controlplane tier's assertions) in a namespace enforcing
Pod Security "restricted", run `kvtrace bench` inside the cluster from the KV node image (with
the cluster's CA bundle and client token: TLS and tokens are on by default), port-forward
Jaeger's query Service and find the traces over the default TLS (verified with the pipeline's
trust bundle), then change the cluster's configuration and check that the members roll and the
replacements serve the next bench. The bench Pod, its result, the traces and the roll are
checked by the same functions as the containers tier (tests/examples/example_assertions.py).
Skips, saying why, where Docker or kind is missing."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from example_assertions import (
    apply_example,
    assert_bench_succeeded,
    assert_children,
    bench_pod,
    change_config_and_wait_rolled,
    pipeline_jaeger,
    wait_kv_traces,
    wait_ready,
)
from examples_lib import EXAMPLES

from kvtrace.devstack.cluster import kubectl_path
from kvtrace.devstack.proc import free_port, port_open
from kvtrace.devstack.pytest_plugin import poll

# The first run builds the images (the collector from source) inside `make kind-up`.
pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]

EXAMPLE = EXAMPLES / "01-basic"


@pytest.fixture
def kubectl(kind_cluster: Path) -> Any:
    """``kubectl(*args, input=None, check=True, timeout=120)`` bound to the kind cluster."""

    def run(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_path(), "--kubeconfig", str(kind_cluster), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    return run


@pytest.fixture
def kind_namespace(kubectl: Any) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security "restricted": the images must run, for real,
    under the security contexts the operator renders (non-root 10001, read-only root)."""
    name = f"kv-e2e-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@contextlib.contextmanager
def port_forward(kubeconfig: Path, namespace: str, target: str, remote: int) -> Iterator[int]:
    """`kubectl port-forward TARGET LOCAL:REMOTE` until the block ends; yields LOCAL."""
    local = free_port()
    proc = subprocess.Popen(
        [
            kubectl_path(),
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            namespace,
            "port-forward",
            target,
            f"{local}:{remote}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            assert proc.poll() is None, f"kubectl port-forward {target} exited ({proc.returncode})"
            return port_open("127.0.0.1", local)

        poll(listening, timeout=30, interval=0.5, message=f"port-forward to {target}")
        yield local
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_bench(kubectl: Any, namespace: str, name: str) -> None:
    """Load from inside the cluster, through the client Service, with the KV node image."""
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(bench_pod(namespace, "https://basic:7070", cluster="basic", name=name)),
    )

    def finished() -> str:
        phase = kubectl(
            "-n", namespace, "get", f"pod/{name}", "-o", "jsonpath={.status.phase}"
        ).stdout
        return phase if phase in ("Succeeded", "Failed") else ""

    phase = poll(finished, timeout=180, interval=2, message=f"the {name} pod to finish")
    assert_bench_succeeded(
        0 if phase == "Succeeded" else 1, kubectl("-n", namespace, "logs", f"pod/{name}").stdout
    )


def test_example_runs_is_benchmarked_and_traced_in_kind(
    kubectl: Any, kind_namespace: str, kind_cluster: Path
) -> None:
    namespace = kind_namespace
    apply_example(kubectl, namespace, EXAMPLE)
    wait_ready(kubectl, namespace, EXAMPLE, timeout=600)
    assert_children(kubectl, namespace, EXAMPLE)
    run_bench(kubectl, namespace, "bench")

    # Development pipeline: every trace is kept; found through Jaeger's /api/v3 over TLS.
    with port_forward(kind_cluster, namespace, "svc/dev-traces-jaeger-query", 16686) as port:
        wait_kv_traces(
            pipeline_jaeger(
                kubectl, namespace, "dev-traces", lambda host, _port: f"127.0.0.1:{port}"
            ),
            "basic",
        )

    # A configuration change rolls the members; the replacements serve the next bench.
    change_config_and_wait_rolled(kubectl, namespace, "basic", timeout=600)
    run_bench(kubectl, namespace, "bench-after-roll")
