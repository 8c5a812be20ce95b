"""The kind tier: the whole product in a kind cluster. Build both images, load them, helm
install the chart, apply examples/01-basic, wait until it is Ready (the same assertions as
the controlplane tier), run `kvtrace bench` inside the cluster, port-forward Jaeger and find
the traces. Skips, saying why, where Docker or kind is missing (see the plugin's
``kind_cluster`` fixture)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))

from chartlib import CHART, REPO, helm, makefile_var  # noqa: E402
from example_assertions import apply_example, assert_children, assert_kv_traces, wait_ready  # noqa: E402
from examples_lib import EXAMPLES  # noqa: E402

from kvtrace.devstack.cluster import kubectl_path  # noqa: E402
from kvtrace.devstack.jaeger_client import JaegerClient  # noqa: E402
from kvtrace.devstack.proc import free_port  # noqa: E402

pytestmark = pytest.mark.kind

EXAMPLE = EXAMPLES / "01-basic"
NAMESPACE = "kv-e2e"
KEY_PREFIX = "e2e-raw-key-"


def images() -> dict[str, str]:
    registry, tag = makefile_var("IMAGE_REGISTRY"), makefile_var("IMAGE_TAG")
    return {"operator": f"{registry}/kvtrace-operator:{tag}", "kvnode": f"{registry}/kvnode:{tag}"}


@pytest.fixture(scope="module")
def kind(kind_cluster: Path) -> Iterator[Any]:
    """kubectl bound to the kind cluster, with both images loaded and the chart installed."""
    config = yaml.safe_load(kind_cluster.read_text())
    name = config["current-context"].removeprefix("kind-")

    def kubectl(*args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_path(), "--kubeconfig", str(kind_cluster), *args], input=input,
                              capture_output=True, text=True, timeout=timeout, check=check)

    subprocess.run(["make", "images"], cwd=REPO, check=True, timeout=1800)
    for image in images().values():
        subprocess.run(["kind", "load", "docker-image", "--name", name, image], check=True, timeout=600)
    helm("install", "kvtrace-operator", str(CHART), "--namespace", "kvtrace-system", "--create-namespace",
         "--set", "image.pullPolicy=Never", "--wait", "--timeout", "5m", kubeconfig=kind_cluster, timeout=600)
    kubectl("create", "namespace", NAMESPACE)
    yield kubectl


@contextlib.contextmanager
def port_forward(kubectl_args: list[str], target: str, remote: int) -> Iterator[int]:
    """`kubectl port-forward TARGET LOCAL:REMOTE` until the block ends; yields LOCAL."""
    from kvtrace.devstack.proc import port_open

    local = free_port()
    proc = subprocess.Popen([*kubectl_args, "port-forward", target, f"{local}:{remote}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", local) and time.monotonic() < deadline:
            assert proc.poll() is None, f"kubectl port-forward {target} exited ({proc.returncode})"
            time.sleep(0.5)
        yield local
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_example_runs_is_benchmarked_and_traced_in_kind(kind: Any, kind_cluster: Path) -> None:
    apply_example(kind, NAMESPACE, EXAMPLE)
    wait_ready(kind, NAMESPACE, EXAMPLE, timeout=600)
    assert_children(kind, NAMESPACE, EXAMPLE)

    # Load from inside the cluster, through the client Service.
    kind("-n", NAMESPACE, "run", "bench", "--restart=Never", f"--image={images()['kvnode']}",
         "--image-pull-policy=Never", "--command", "--", "kvtrace", "bench",
         "--endpoint", "http://basic:7070", "--duration", "10", "--ops", "2000", "--clients", "4",
         "--key-prefix", KEY_PREFIX)
    kind("-n", NAMESPACE, "wait", "pod/bench", "--for=jsonpath={.status.phase}=Succeeded",
         "--timeout=180s", timeout=200)

    # Development pipeline: every trace is kept; find them through Jaeger's /api/v3.
    kubectl = [kubectl_path(), "--kubeconfig", str(kind_cluster), "-n", NAMESPACE]
    with port_forward(kubectl, "svc/dev-traces-jaeger-query", 16686) as port:
        jaeger = JaegerClient(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while "basic" not in jaeger.services() and time.monotonic() < deadline:
            time.sleep(2)
        assert_kv_traces(jaeger, "basic", KEY_PREFIX)
