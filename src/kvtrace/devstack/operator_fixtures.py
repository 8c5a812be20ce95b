"""Controlplane fixtures shared by every test directory (registered in tests/conftest.py): our
CRDs installed once on the local cluster, the operator (``kvtrace operator run -n NS``) as a real
subprocess watching the test's namespace, and ``Kube``, kubectl helpers for one namespace.

One module with a unique name, so no test imports a ``conftest`` (which of several conftest
modules that name resolves to depends on what one pytest run collects)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace.devstack.pytest_plugin import dump_log_if_failed, operator_process

REPO = Path(__file__).resolve().parents[3]
CRDS = Path(os.environ.get("KVTRACE_CRDS_DIR", REPO / "crds"))  # override: try other CRD files


@pytest.fixture(scope="session")
def crds(local_cluster: Any) -> list[str]:
    """Install (server-side apply) every CRD of crds/ and wait until they are established."""
    local_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    names = [
        yaml.safe_load(path.read_text())["metadata"]["name"] for path in sorted(CRDS.glob("*.yaml"))
    ]
    local_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{name}" for name in names]
    )
    return names


class Operator:
    """``kvtrace operator run -n NS`` in a subprocess (the plugin's ``operator_process``); its
    log is printed when a test fails."""

    def __init__(
        self,
        local_cluster: Any,
        namespace: str,
        log_path: Path,
        extra: list[str],
        endpoint_map: Path,
    ) -> None:
        args = [
            "-n",
            namespace,
            "--liveness",
            "none",
            "--metrics-port",
            "0",
            "--resync-interval",
            "3",
            "--retry-backoff",
            "1",
            *extra,
        ]
        # The endpoint map lets it reach members started by a pod runner (drain checks).
        self.process = operator_process(
            local_cluster.kubeconfig, args, log_path, KVTRACE_ENDPOINT_MAP=str(endpoint_map)
        )
        self.log_path = log_path

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.popen

    def start(self) -> Operator:
        self.process.start()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies mid-reconcile."""
        if self.process.alive():
            os.killpg(self.process.popen.pid, signal.SIGKILL)  # type: ignore[union-attr]
            self.process.popen.wait(timeout=10)  # type: ignore[union-attr]

    def stop(self) -> None:
        self.process.stop(timeout=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_has(self, text: str) -> bool:
        return text in self.log()


@pytest.fixture
def operator(
    local_cluster: Any,
    namespace: str,
    crds: list[str],
    tmp_path: Path,
    endpoint_map: Any,
    request: pytest.FixtureRequest,
) -> Iterator[Operator]:
    """The operator watching the test's namespace, with a short drift-repair interval (3s);
    ``@pytest.mark.operator_args(...)`` adds flags."""
    marker = request.node.get_closest_marker("operator_args")
    extra = [str(arg) for arg in marker.args] if marker else []
    op = Operator(
        local_cluster, namespace, tmp_path / "operator.log", extra, endpoint_map.path
    ).start()
    try:
        yield op
    finally:
        op.stop()
        dump_log_if_failed(request, "operator log", op.log_path)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "operator_args(*flags): extra flags for the operator fixture"
    )


class Kube:
    """Small helpers over kubectl for one namespace (what a user would type)."""

    def __init__(
        self, kubectl: Callable[..., subprocess.CompletedProcess[str]], namespace: str
    ) -> None:
        self.kubectl = kubectl
        self.namespace = namespace

    def run(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl("-n", self.namespace, *args, input=input, check=check)

    def apply(self, *objects: dict[str, Any]) -> None:
        self.run("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.run("get", kind, name, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    def list(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self.run(*args).stdout)["items"]  # type: ignore[no-any-return]

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.get(kind, name) or {}
        for cond in (obj.get("status") or {}).get("conditions") or ():
            if cond["type"] == type_:
                return cond  # type: ignore[no-any-return]
        return None

    def condition_is(
        self, kind: str, name: str, type_: str, status: str, reason: str | None = None
    ) -> bool:
        cond = self.condition(kind, name, type_)
        return (
            cond is not None
            and cond["status"] == status
            and (reason is None or cond["reason"] == reason)
        )


@pytest.fixture
def kube_ns(kubectl: Callable[..., subprocess.CompletedProcess[str]], namespace: str) -> Kube:
    return Kube(kubectl, namespace)
